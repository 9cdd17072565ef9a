"""The torch costs/terminations of every task against the real gymnasium env, step by step."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
import torch
from task_cases import ALL, _mujoco_log_outside_repo, fresh_task  # noqa: F401 (autouse fixture)
from torch import Tensor

from envs import Task, make_task

TERMINATING = ["Hopper-v5", "InvertedPendulum-v5", "PushedInvertedPendulum-v0", "Walker2d-v5"]
ALIVE_BONUS = {
    "InvertedPendulum-v5",
    "PushedInvertedPendulum-v0",
}  # a flat reward: a surrogate plans
STEPS = 1000


@dataclass(frozen=True)
class Rollout:
    """STEPS transitions of random normalised actions (float64 numpy, time-major)."""

    obs: np.ndarray  # [N, S]
    action: np.ndarray  # [N, A], the exact float32 values sent to the env
    next_obs: np.ndarray  # [N, S], the step's own obs even when the episode ended there
    reward: np.ndarray  # [N]
    terminated: np.ndarray  # [N] bool

    def tensors(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(  # type: ignore[return-value]
            torch.as_tensor(a, dtype=dtype) for a in (self.obs, self.action, self.next_obs)
        )


@cache
def rollout(env_id: str, low: float = -1.0, high: float = 1.0, steps: int = STEPS) -> Rollout:
    """Step the task's env with seeded uniform actions in [low, high], resetting on episode end."""
    task = make_task(env_id)
    env = task.make_env(seed=0)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, float, bool]] = []
    for _ in range(steps):
        action = rng.uniform(low, high, size=task.act_dim).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, next_obs, float(reward), bool(terminated)))
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    obs_, act_, next_, rew_, term_ = zip(*rows, strict=True)
    return Rollout(
        obs=np.stack(obs_).astype(np.float64),
        action=np.stack(act_),
        next_obs=np.stack(next_).astype(np.float64),
        reward=np.array(rew_),
        terminated=np.array(term_),
    )


# Pendulum-v1 emits float32 observations itself, so even a float64 cost sees a rounded
# angle (|d angle^2| <= 2 pi * 6e-8) and speed (|d 0.1 speed^2| <= 0.2 * 8 * 4.8e-7).
FLOAT64_TOLERANCE = {"Pendulum-v1": 1.5e-6}


def float32_tolerance(task: Task, data: Rollout) -> float:
    """Allowed |cost - (-reward)| when the inputs are float32.

    Forward velocity subtracts two x positions that float32 has already rounded, so the error is
    up to one ulp of the largest |x| divided by dt (HalfCheetah, dt = 0.05, drifts a few metres);
    everything else is well inside 1e-4.
    """
    if "exclude_current_positions_from_observation" not in task.gym_kwargs:
        return 1e-4
    x_max = np.abs(np.concatenate([data.obs[:, 0], data.next_obs[:, 0]])).max()
    return 1e-4 + float(np.spacing(np.float32(x_max))) / task.dt


@pytest.mark.parametrize("env_id", ALL)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cost_is_minus_reward(env_id: str, dtype: torch.dtype) -> None:
    task, data = fresh_task(env_id), rollout(env_id)
    cost = task.cost(*data.tensors(dtype))
    assert cost.shape == (STEPS,) and cost.dtype == dtype
    if dtype == torch.float64:
        atol = FLOAT64_TOLERANCE.get(env_id, 1e-6)
    else:
        atol = float32_tolerance(task, data)
    np.testing.assert_allclose(cost.double().numpy(), -data.reward, rtol=0, atol=atol)


@pytest.mark.parametrize("env_id", ALL)
def test_cost_is_minus_reward_for_out_of_range_actions(env_id: str) -> None:
    # Pendulum clips its torque but MuJoCo envs charge ctrl cost on the unclipped action.
    task, data = fresh_task(env_id), rollout(env_id, low=-2.0, high=2.0, steps=200)
    cost = task.cost(*data.tensors(torch.float64))
    atol = FLOAT64_TOLERANCE.get(env_id, 1e-6)
    np.testing.assert_allclose(cost.numpy(), -data.reward, rtol=0, atol=atol)


@pytest.mark.parametrize("env_id", TERMINATING)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_terminated_matches_env(env_id: str, dtype: torch.dtype) -> None:
    task, data = fresh_task(env_id), rollout(env_id)
    assert task.terminated is not None
    # Random actions end these episodes within tens of steps: both outcomes are well covered.
    assert 20 <= data.terminated.sum() <= STEPS - 200
    predicted = task.terminated(torch.as_tensor(data.next_obs, dtype=dtype))
    assert predicted.dtype == torch.bool and predicted.shape == (STEPS,)
    np.testing.assert_array_equal(predicted.numpy(), data.terminated)


@pytest.mark.parametrize("env_id", sorted(set(ALL) - set(TERMINATING)))
def test_non_terminating_tasks_have_no_termination(env_id: str) -> None:
    assert fresh_task(env_id).terminated is None
    assert not rollout(env_id).terminated.any()


# Pendulum's reward is computed on the pre-step state, the others on the post-step one.
STATE_ARG = {
    "Pendulum-v1": 0,
    "Reacher-v5": 2,
    "HalfCheetah-v5": 2,
    "Hopper-v5": 2,
    "Walker2d-v5": 2,
}


@pytest.mark.parametrize("env_id", ALL)
def test_costs_are_differentiable(env_id: str) -> None:
    task = fresh_task(env_id)
    data = rollout(env_id)
    for name, fn in (("cost", task.cost), ("planning_cost", task.planning_cost)):
        inputs = [t[:100].clone().requires_grad_(True) for t in data.tensors(torch.float32)]
        out = fn(*inputs).sum()
        if not out.requires_grad:
            assert name == "cost" and env_id in ALIVE_BONUS  # alive bonus only
            continue
        grads = torch.autograd.grad(out, inputs, allow_unused=True)
        for grad in grads:
            assert grad is None or torch.isfinite(grad).all(), (name, env_id)
        if env_id in STATE_ARG:
            assert grads[1] is not None and grads[1].abs().sum() > 0, (name, env_id)
            state_grad = grads[STATE_ARG[env_id]]
            assert state_grad is not None and state_grad.abs().sum() > 0, (name, env_id)
    # InvertedPendulum's true reward is flat; the surrogate must still point somewhere.
    if env_id in ALIVE_BONUS:
        next_obs = data.tensors(torch.float32)[2][:100].requires_grad_(True)
        obs, action = (t[:100] for t in data.tensors(torch.float32)[:2])
        (grad,) = torch.autograd.grad(task.planning_cost(obs, action, next_obs).sum(), next_obs)
        assert torch.isfinite(grad).all() and grad[:, 1].abs().min() > 0


def test_planning_surrogate_prefers_upright_pole() -> None:
    task = fresh_task("InvertedPendulum-v5")
    zeros = torch.zeros(3, 4)
    next_obs = torch.tensor([[0.0, 0.0, 0, 0], [0.0, 0.1, 0, 0], [0.0, 0.3, 0, 0]])
    cost = task.planning_cost(zeros, torch.zeros(3, 1), next_obs)
    assert cost[0] < cost[1] < cost[2]
    assert task.planning_cost is not task.cost
    for env_id in sorted(set(ALL) - ALIVE_BONUS):
        other = fresh_task(env_id)
        assert other.planning_cost == other.cost


@pytest.mark.parametrize("env_id", ALL)
def test_extra_leading_dims(env_id: str) -> None:
    task, data = fresh_task(env_id), rollout(env_id)
    obs, action, next_obs = data.tensors(torch.float64)
    t, b = 25, 40  # [T*B, ...] -> [T, B, ...]
    shaped = [x.reshape(t, b, -1) for x in (obs, action, next_obs)]
    for fn in (task.cost, task.planning_cost):
        out = fn(*shaped)
        assert out.shape == (t, b)
        torch.testing.assert_close(out.reshape(-1), fn(obs, action, next_obs))
    if task.terminated is not None:
        terminated = task.terminated(shaped[2])
        assert terminated.shape == (t, b)
        assert torch.equal(terminated.reshape(-1), task.terminated(next_obs))


def test_inverted_pendulum_planning_cost_is_the_cost_plus_the_stated_pull() -> None:
    task = fresh_task("InvertedPendulum-v5")
    obs = torch.zeros(2, 4, dtype=torch.float64)
    nxt = torch.tensor([[0.5, 0.1, -1.0, 2.0], [0.0, 0.3, 0.0, 0.0]], dtype=torch.float64)
    action = torch.zeros(2, 1, dtype=torch.float64)
    pull = (0.1 / 0.2) ** 2 + 0.1 * 0.25 + 0.01 * 1.0 + 0.01 * 4.0
    # alive: -1 + the pull; past 0.2 rad: 0 (terminated) + (0.3 / 0.2)^2
    expected = torch.tensor([-1.0 + pull, (0.3 / 0.2) ** 2], dtype=torch.float64)
    torch.testing.assert_close(task.planning_cost(obs, action, nxt), expected)
