"""The stochastic tasks: their outcomes are exact, both happen, and costs are minus rewards."""

import numpy as np
import pytest
import torch

from envs import make_task
from envs.stochastic import (
    LEDGE_EDGE,
    LEDGE_GOAL,
    PUSH,
    GustyLedgeEnv,
    gusty_ledge_cost,
    pushed_pendulum_outcomes,
)

STOCHASTIC = ["GustyLedge-v0", "PushedInvertedPendulum-v0"]


def _transitions(env_id: str, steps: int, seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    task = make_task(env_id)
    env = task.make_env(seed=seed)
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        out.append((obs, action, next_obs, np.float64(reward), np.bool_(terminated)))
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return out


@pytest.mark.parametrize("env_id", STOCHASTIC)
def test_the_real_next_state_is_one_of_two_distinct_outcomes_and_both_happen(env_id: str) -> None:
    task = make_task(env_id)
    assert task.outcomes is not None and task.random_dims
    obs, action, next_obs, _, _ = (
        np.stack(x) for x in zip(*_transitions(env_id, 300), strict=True)
    )
    outcomes = task.outcomes(obs, action)  # [2, N, S]
    distance = np.linalg.norm(outcomes - next_obs[None], axis=-1)  # [2, N]
    assert distance.min(0).max() < 1e-6
    which = distance.argmin(0)
    assert 0.4 < which.mean() < 0.6  # a fair coin over 300 steps
    gap = np.abs(outcomes[1] - outcomes[0])  # the randomness moves the dims it names
    assert (gap[:, list(task.random_dims)].max(-1) > 1e-3).all()


@pytest.mark.parametrize("env_id", STOCHASTIC)
def test_cost_is_minus_the_reward_and_termination_the_env_flag(env_id: str) -> None:
    task = make_task(env_id)
    obs, action, next_obs, reward, terminated = (
        torch.as_tensor(np.stack(x)) for x in zip(*_transitions(env_id, 300, seed=1), strict=True)
    )
    torch.testing.assert_close(task.cost(obs, action.double(), next_obs), -reward)
    if task.terminated is None:
        assert not terminated.any()
    else:
        assert terminated.any()
        torch.testing.assert_close(task.terminated(next_obs), terminated)


def test_the_ledge_pays_for_distance_to_the_goal_and_per_metre_beyond_the_edge() -> None:
    at = lambda x: torch.tensor([[x, 0.0]])  # noqa: E731
    none = torch.zeros(1, 2)
    assert gusty_ledge_cost(none, none[:, :1], at(LEDGE_GOAL)).item() == 0.0
    assert gusty_ledge_cost(none, none[:, :1], at(LEDGE_GOAL - 0.1)).item() == pytest.approx(0.01)
    beyond = gusty_ledge_cost(none, none[:, :1], at(LEDGE_EDGE + 0.1)).item()
    assert beyond == pytest.approx((LEDGE_EDGE + 0.1 - LEDGE_GOAL) ** 2 + 1.0)


def test_the_pendulum_push_changes_the_cart_velocity_by_twice_the_push() -> None:
    obs = np.zeros((1, 4))
    outcomes = pushed_pendulum_outcomes(obs, np.zeros((1, 1)))
    # two frames of the cart's own dynamics damp the kick a little
    assert outcomes[1, 0, 2] - outcomes[0, 0, 2] == pytest.approx(2 * PUSH, rel=0.1)
    np.testing.assert_allclose(outcomes[0, 0, 2], -outcomes[1, 0, 2], atol=1e-3)


def test_the_ledge_env_renders_its_cart_where_it_stands() -> None:
    env = make_task("GustyLedge-v0").make_env(seed=0, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    columns = np.nonzero(frame.mean(-1).min(0) < 80)[0]  # the dark cart
    assert abs(columns.mean() - (obs[0] + 1.5) / 3 * 64) < 1.5
    edge = int((LEDGE_EDGE + 1.5) / 3 * 64) + 1
    assert tuple(frame[0, edge]) == (230, 180, 180) and tuple(frame[0, 0]) == (255, 255, 255)
    with pytest.raises(ValueError, match="^GustyLedge renders only 'rgb_array', not 'human'$"):
        GustyLedgeEnv(render_mode="human")
    assert GustyLedgeEnv().render() is None
