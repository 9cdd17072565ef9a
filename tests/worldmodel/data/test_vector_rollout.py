"""Episodes side by side in a gymnasium vector env (`run_episodes`): the same episodes, one
after another or n at a time, within one step budget for all of them."""

import gymnasium as gym
import numpy as np
import pytest

from worldmodel.data.rollout import run_episode, run_episodes
from worldmodel.data.store import EpisodeStore
from worldmodel.errors import DataError


class SeedLengthEnv(gym.Env):
    """obs = [t, seed]; reward = action + t; terminated at t = 2 + seed % 5, so the envs of a
    vector env finish out of step."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.seed_used = 0, -1 if seed is None else seed
        return self._obs(), {}

    def step(self, action):
        reward = float(action[0]) + self.t
        self.t += 1
        end = 2 + max(self.seed_used, 0) % 5
        return self._obs(), reward, self.t >= end, False, {}

    def _obs(self) -> np.ndarray:
        return np.array([self.t, self.seed_used], np.float32)


def _vec(n: int) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv(
        [SeedLengthEnv for _ in range(n)], autoreset_mode=gym.vector.AutoresetMode.DISABLED
    )


def _act(obs: np.ndarray) -> np.ndarray:
    return np.tanh(0.3 * obs[..., :1] - 0.1 * obs[..., 1:])


SEEDS = [3, 10, 4, 7, 21, 6]


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_side_by_side_episodes_are_the_sequential_ones_in_seed_order(n: int) -> None:
    one_by_one, side_by_side = EpisodeStore(2, 1), EpisodeStore(2, 1)
    expected = [run_episode(SeedLengthEnv(), _act, seed=s, store=one_by_one) for s in SEEDS]
    calls: list[list[int]] = []

    def policy(obs: np.ndarray, envs: list[int]) -> np.ndarray:
        calls.append(envs)
        return _act(obs)

    ended: list[int] = []
    results = run_episodes(_vec(n), policy, SEEDS, side_by_side, on_end=ended.append)
    assert results == expected
    for key, column in one_by_one.data.items():
        np.testing.assert_array_equal(side_by_side.data[key], column, err_msg=key)
    assert len(ended) == len(SEEDS)  # each episode's end reported once
    assert max(len(c) for c in calls) == min(n, len(SEEDS))
    if n > 1:  # an env with no episode left idles, and is not asked for actions
        assert any(len(c) < min(n, len(SEEDS)) for c in calls)


def test_the_step_budget_ends_the_episodes_running_as_truncated() -> None:
    store = EpisodeStore(2, 1)
    results = run_episodes(_vec(3), lambda obs, envs: _act(obs), SEEDS, store, max_steps=7)
    assert sum(r.length for r in results) == len(store) == 7
    ends = np.cumsum([r.length for r in results]) - 1
    finished = store.data["terminated"][ends] | store.data["truncated"][ends]
    assert finished.all()  # every episode ends on its last step, by the task or the budget
    assert store.data["truncated"].sum() >= 1 and not any(r.terminated for r in results[-1:])
    seeds = store.data["obs"][np.r_[0, ends[:-1] + 1], 1]
    assert seeds.tolist() == SEEDS[: len(results)]  # those not started are not run


def test_a_wrong_action_is_refused() -> None:
    with pytest.raises(DataError, match="expected finite"):
        run_episodes(_vec(2), lambda obs, envs: np.zeros((len(envs), 2)), SEEDS)
    with pytest.raises(DataError, match="finite: False"):
        run_episodes(_vec(2), lambda obs, envs: np.full((len(envs), 1), np.nan), SEEDS)
