"""Episodes of an actor in a gymnasium env, recorded step by step into the store."""

import gymnasium as gym
import numpy as np
import pytest

from worldmodel.data.rollout import collect, random_policy, run_episode
from worldmodel.data.store import EpisodeStore
from worldmodel.errors import DataError


class CountEnv(gym.Env):
    """obs = [t, reset seed]; reward = action + t; ends (terminated) once t reaches `end`.

    Stepped, or reset, more than `budget` times in all, it raises: a loop that never ends (even
    one of episodes that take no step) fails at once.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, end: int | None = None, budget: int = 1_000) -> None:
        self.end, self.t, self.seed_used = end, 0, -1
        self.budget, self.received, self.resets = budget, [], 0

    def reset(self, *, seed=None, options=None):
        if self.resets >= self.budget:
            raise AssertionError(f"reset more than {self.budget} times: an endless loop")
        self.resets += 1
        super().reset(seed=seed)
        self.t, self.seed_used = 0, -1 if seed is None else seed
        return self._obs(), {}

    def step(self, action):
        if len(self.received) >= self.budget:
            raise AssertionError(f"stepped more than {self.budget} times: an endless loop")
        self.received.append(action)
        reward = float(action[0]) + self.t
        self.t += 1
        return self._obs(), reward, self.end is not None and self.t >= self.end, False, {}

    def _obs(self) -> np.ndarray:
        return np.array([self.t, self.seed_used], np.float32)


def test_an_episode_is_recorded_transition_by_transition() -> None:
    store, steps = EpisodeStore(2, 1), []
    result = run_episode(CountEnv(end=3), lambda obs: np.array([0.5]), seed=7, store=store,
                         on_step=steps.append)  # fmt: skip
    data = store.data
    np.testing.assert_array_equal(data["obs"], [[0, 7], [1, 7], [2, 7]])
    np.testing.assert_array_equal(data["next_obs"], [[1, 7], [2, 7], [3, 7]])
    np.testing.assert_array_equal(data["action"], [[0.5]] * 3)
    np.testing.assert_array_equal(data["reward"], [0.5, 1.5, 2.5])
    assert data["terminated"].tolist() == [False, False, True]
    assert data["truncated"].tolist() == [False, False, False]
    assert (result.episode_return, result.length, result.terminated) == (4.5, 3, True)
    assert steps == [1, 2, 3]


def test_max_steps_cuts_the_episode_as_a_truncation() -> None:
    store = EpisodeStore(2, 1)
    result = run_episode(CountEnv(), lambda obs: np.array([0.0]), store=store, max_steps=4)
    assert (result.length, result.terminated) == (4, False)
    assert store.data["truncated"].tolist() == [False, False, False, True]
    one = run_episode(CountEnv(), lambda obs: np.array([0.0]), max_steps=1)
    assert one.length == 1


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.array([0.0, 0.0]), "shape (2,) (finite: True); expected finite (1,)"),
        (np.array([np.nan]), "shape (1,) (finite: False); expected finite (1,)"),
    ],
)
def test_a_bad_action_is_a_one_line_error(action: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match="policy returned action") as error:
        run_episode(CountEnv(), lambda obs: action)
    assert str(error.value) == f"policy returned action of {message}"


def test_collect_takes_exactly_the_steps_asked_for_in_seeded_episodes() -> None:
    store, counts = EpisodeStore(2, 1), []
    results = collect(CountEnv(end=4), lambda obs: np.array([0.0]), 10, store, seed=20,
                      on_step=counts.append)  # fmt: skip
    assert [r.length for r in results] == [4, 4, 2] and len(store) == 10
    assert counts == list(range(1, 11))  # steps counted across episodes
    first_obs = store.data["obs"][np.r_[0, 4, 8]]
    assert first_obs[:, 1].tolist() == [20, 21, 22]  # episode i reset with seed + i
    assert store.data["truncated"].tolist()[-1] and not store.data["terminated"][-1]
    assert len(collect(CountEnv(), lambda obs: np.array([0.0]), 1, EpisodeStore(2, 1), 0)) == 1
    with pytest.raises(DataError, match="positive"):
        collect(CountEnv(), lambda obs: np.array([0.0]), 0, EpisodeStore(2, 1), 0)


def test_random_policy_is_seeded() -> None:
    draws = []
    for _ in range(2):
        policy = random_policy(CountEnv(), seed=3)
        draws.append([policy(None) for _ in range(5)])
    np.testing.assert_array_equal(draws[0], draws[1])
    other = random_policy(CountEnv(), seed=4)
    assert not np.array_equal(draws[0][0], other(None))


def test_the_policy_sees_each_new_observation_and_the_env_gets_its_float32_action() -> None:
    env, store = CountEnv(end=3), EpisodeStore(2, 1)
    policy = lambda obs: np.array([0.1 * float(obs[0])])  # noqa: E731  float64 out
    result = run_episode(env, policy, store=store)
    assert [a.dtype for a in env.received] == [np.float32] * 3
    np.testing.assert_array_equal(np.concatenate(env.received), np.float32([0.0, 0.1, 0.2]))
    np.testing.assert_array_equal(store.data["action"][:, 0], np.concatenate(env.received))
    # The return sums what the env paid for the float32 actions it was given.
    assert result.episode_return == sum(float(a[0]) + t for t, a in enumerate(env.received))


def test_an_episode_ends_at_its_termination_and_max_steps_ends_an_endless_one() -> None:
    env = CountEnv(end=5)
    assert run_episode(env, lambda obs: np.array([0.0])).length == 5 and len(env.received) == 5
    endless = CountEnv(budget=50)
    result = run_episode(endless, lambda obs: np.array([0.0]), max_steps=30)
    assert (result.length, result.terminated, len(endless.received)) == (30, False, 30)


def test_collect_resets_until_the_steps_are_taken_and_no_further() -> None:
    env = CountEnv(end=3, budget=100)
    results = collect(env, lambda obs: np.array([0.0]), 100, EpisodeStore(2, 1), seed=0)
    assert len(env.received) == 100 and sum(r.length for r in results) == 100
    assert [r.length for r in results] == [3] * 33 + [1]
