"""Why InvertedPendulum's preset ends its 10-step plan in the critic's value: receding-horizon
LQR on the exact linearisation of the MuJoCo task, with the planning cost's own quadratic weights.

Even with a perfect model, a 10-step plan without terminal cost gives an unstable closed loop (the
cart drifts into the rail's end), and 30 steps barely stabilise it; the infinite-horizon value as
terminal cost stabilises every horizon, which is what a critic learns to approximate.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs import costs


def linearised_inverted_pendulum() -> tuple[np.ndarray, np.ndarray]:
    """A [4, 4], B [4, 1] of obs[t+1] = A obs[t] + B a[t] around upright and at rest, for the
    planner's normalised action a in [-1, 1], by central differences through MuJoCo."""
    env = gym.make("InvertedPendulum-v5").unwrapped
    env.reset(seed=0)
    scale = float(env.action_space.high[0])

    def step(state: np.ndarray, action: float) -> np.ndarray:
        env.set_state(state[:2], state[2:])
        return env.step(np.array([scale * action]))[0]

    eps, zero = 1e-5, np.zeros(4)
    a = np.stack([(step(e * eps, 0.0) - step(-e * eps, 0.0)) / (2 * eps) for e in np.eye(4)], 1)
    b = ((step(zero, eps) - step(zero, -eps)) / (2 * eps))[:, None]
    env.close()
    return a, b


def planning_cost_weights() -> np.ndarray:
    """Q [4, 4]: half the Hessian of the planning cost in the next state, at upright and rest."""
    zero = torch.zeros(4, dtype=torch.float64)
    hessian = torch.autograd.functional.hessian(
        lambda s: costs.inverted_pendulum_planning_cost(zero, zero[:1], s), zero
    )
    return hessian.numpy() / 2


def closed_loop_radius(
    a: np.ndarray, b: np.ndarray, q: np.ndarray, horizon: int, terminal: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Spectral radius of the receding-horizon LQR closed loop (first gain of a `horizon`-step
    Riccati recursion from `terminal`, default q), and the recursion's cost-to-go matrix."""
    p = q if terminal is None else terminal
    for _ in range(horizon):
        k = np.linalg.solve(b.T @ p @ b, b.T @ p @ a)
        p_next = q + a.T @ p @ (a - b @ k)
        p, gain = p_next, k
    return float(np.abs(np.linalg.eigvals(a - b @ gain)).max()), p


def test_a_short_plan_needs_a_terminal_value() -> None:
    a, b = linearised_inverted_pendulum()
    q = planning_cost_weights()
    assert np.allclose(np.diag(np.diag(q)), q) and q[1, 1] == pytest.approx(25.0)
    radius_10, _ = closed_loop_radius(a, b, q, 10)
    radius_30, _ = closed_loop_radius(a, b, q, 30)
    _, value = closed_loop_radius(a, b, q, 5000)  # converged: the infinite-horizon cost-to-go
    radius_10_valued, _ = closed_loop_radius(a, b, q, 10, terminal=value)
    assert radius_10 > 1.0  # drifts away without bound
    assert 0.99 < radius_30 < 1.0  # barely stable: a drift takes hundreds of steps to undo
    assert radius_10_valued < 0.98
