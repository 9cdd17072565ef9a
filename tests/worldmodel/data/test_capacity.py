"""The replay store stays within its capacity (docs/data.md): FIFO by whole episode, the newest
episode always kept whole, and memory that stops growing however long the loop runs."""

from __future__ import annotations

import tracemalloc

import gymnasium as gym
import numpy as np

from envs import make_task
from worldmodel.data.rollout import collect, random_policy
from worldmodel.data.store import EpisodeStore

OBS, ACT = 17, 6  # HalfCheetah-size transitions
BYTES_PER_STEP = 4 * (2 * OBS + ACT + 1) + 2 + 8  # obs, next_obs, action, reward, flags, episode


def _episode(rng: np.random.Generator, length: int, value: float) -> tuple[np.ndarray, ...]:
    obs = np.full((length, OBS), value, np.float32)
    obs[:, 1] = np.arange(length)
    no = np.zeros(length, bool)
    return obs, rng.uniform(-1, 1, (length, ACT)), np.full(length, value), obs + 1, no, no


def _nbytes(store: EpisodeStore) -> int:
    """Bytes held by the store's arrays, counting the whole buffer behind any view."""
    return sum((v.base if v.base is not None else v).nbytes for v in store.data.values())


def test_a_long_run_of_episodes_stays_within_capacity_in_length_and_memory() -> None:
    capacity = 2_000
    store = EpisodeStore(OBS, ACT, capacity=capacity)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=3_000)  # ~450k steps offered, 225x the capacity
    tracemalloc.start()
    try:
        for i, length in enumerate(lengths):
            store.add_episode(*_episode(rng, int(length), float(i)))
            assert len(store) <= capacity
            if i == 100:
                settled, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _nbytes(store) <= capacity * BYTES_PER_STEP
    # Memory after 3000 episodes is what it was after 100: nothing accumulates.
    assert current < settled + capacity * BYTES_PER_STEP
    # While adding, at most the kept data, one episode and one concatenated copy are alive.
    assert peak < settled + 3 * capacity * BYTES_PER_STEP
    # FIFO by whole episode: the newest episodes, contiguous, each complete and in order.
    episode = store.data["episode"]
    kept = np.unique(episode)
    assert kept[-1] == len(lengths) - 1 and np.array_equal(kept, np.arange(kept[0], kept[-1] + 1))
    assert [int((episode == e).sum()) for e in kept] == [int(lengths[e]) for e in kept]
    assert sum(int(lengths[e]) for e in range(kept[0] - 1, len(lengths))) > capacity
    np.testing.assert_array_equal(store.data["reward"], episode.astype(np.float32))


def test_the_newest_episode_is_kept_whole_even_beyond_capacity() -> None:
    store = EpisodeStore(OBS, ACT, capacity=50)
    rng = np.random.default_rng(1)
    store.add_episode(*_episode(rng, 30, 0.0))
    store.add_episode(*_episode(rng, 80, 1.0))
    assert len(store) == 80 and store.num_episodes == 1
    np.testing.assert_array_equal(store.data["obs"][:, 1], np.arange(80))
    store.add_episode(*_episode(rng, 10, 2.0))
    assert len(store) == 10 and store.num_episodes == 1


def test_capacity_applies_on_load(tmp_path) -> None:
    store = EpisodeStore(OBS, ACT)
    rng = np.random.default_rng(2)
    for i in range(10):
        store.add_episode(*_episode(rng, 20, float(i)))
    store.save(tmp_path / "data.npz")
    loaded = EpisodeStore.load(tmp_path / "data.npz", capacity=50)
    assert len(loaded) == 40 and loaded.data["reward"][0] == 8.0  # episodes 8 and 9


class _StepBudget(gym.Wrapper):
    """Counts the steps taken; raises past `budget` steps or resets (a loop that never ends, even
    one of episodes that take no step, fails at once)."""

    def __init__(self, env: gym.Env, budget: int) -> None:
        super().__init__(env)
        self.budget, self.steps, self.resets = budget, 0, 0

    def reset(self, **kwargs):
        if self.resets >= self.budget:
            raise AssertionError(f"reset more than {self.budget} times: an endless loop")
        self.resets += 1
        return self.env.reset(**kwargs)

    def step(self, action):
        if self.steps >= self.budget:
            raise AssertionError(f"stepped more than {self.budget} times: an endless loop")
        self.steps += 1
        return self.env.step(action)


def test_collecting_from_a_real_env_keeps_the_store_bounded() -> None:
    task = make_task("Pendulum-v1")
    env = _StepBudget(task.make_env(seed=0), budget=10_000)
    store = EpisodeStore(task.obs_dim, task.act_dim, capacity=1_000)
    for round_ in range(10):
        collect(env, random_policy(env, round_), 1_000, store, seed=round_)
        assert len(store) <= 1_000
    env.close()
    assert env.steps == 10_000  # exactly the steps asked for
    assert env.resets == 50  # in 200-step episodes (the time limit), one reset each
    assert store.num_episodes == 5  # whole 200-step episodes, the newest ones
