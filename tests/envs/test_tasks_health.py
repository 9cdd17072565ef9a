"""Hopper, Walker2d and InvertedPendulum health: terminations on states set one by one."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from task_cases import _mujoco_log_outside_repo, fresh_task  # noqa: F401 (autouse fixture)

from envs import TASKS

# Random rollouts only ever fall over (angle): states set one by one also break the height and
# (Hopper's) state-range conditions, each failing about a third of the time. Walker2d-v5 checks
# height (0.8, 2) and angle (-1, 1) only, so its joints go far outside Hopper's state range.
HEALTH_CASES = {  # rng seed, torso height range, torso angle range, joints, velocities
    "Hopper-v5": (1, (0.6, 0.9), 0.3, 3, 6),
    "Walker2d-v5": (2, (0.6, 2.2), 1.3, 6, 9),
}


@pytest.mark.parametrize("task_id", sorted(HEALTH_CASES))
def test_terminated_matches_the_env_on_every_health_condition(task_id: str) -> None:
    seed, (low, high), angle, joints, velocities = HEALTH_CASES[task_id]
    task = fresh_task(task_id)
    assert task.terminated is not None
    env = task.make_env(seed=0)
    body = env.unwrapped
    rng = np.random.default_rng(seed)
    observations, healthy = [], []
    for _ in range(600):
        qpos = np.concatenate(
            [rng.uniform(-1, 1, 1), rng.uniform(low, high, 1), rng.uniform(-angle, angle, 1)]
            + [rng.uniform(-150, 150, joints) if rng.random() < 0.3 else rng.uniform(-1, 1, joints)]
        )
        body.set_state(qpos, rng.uniform(-20, 20, velocities))  # type: ignore[attr-defined]
        observations.append(body._get_obs())  # type: ignore[attr-defined]
        healthy.append(body.is_healthy)  # type: ignore[attr-defined]
    env.close()
    healthy_ = np.array(healthy)
    assert 100 <= healthy_.sum() <= 500
    predicted = task.terminated(torch.as_tensor(np.stack(observations)))
    np.testing.assert_array_equal(predicted.numpy(), ~healthy_)


def test_inverted_pendulum_ends_past_0_2_rad_and_on_non_finite_states() -> None:
    terminated = fresh_task("InvertedPendulum-v5").terminated
    assert terminated is not None
    obs = torch.zeros(5, 4, dtype=torch.float64)
    obs[1, 1], obs[2, 1], obs[3, 1] = 0.2, 0.2 + 1e-9, -0.2 - 1e-9  # the env: |angle| > 0.2
    obs[4, 2] = float("nan")  # a blown-up velocity ends it too, whatever the angle
    assert terminated(obs).tolist() == [False, False, True, True, True]


def test_hopper_health_boundaries_match_the_env() -> None:
    """z, angle and state exactly on their ranges' ends: the env's strict inequalities say
    unhealthy; just inside says healthy. Each case set in the env's own MjData."""
    task = fresh_task("Hopper-v5")
    env = task.make_env()
    u = env.unwrapped
    (z_low, z_high), (a_low, a_high) = u._healthy_z_range, u._healthy_angle_range
    s_high = u._healthy_state_range[1]
    eps = 1e-6
    cases = {
        "z at its floor": (1, z_low), "z just above": (1, z_low + eps),
        "angle at its end": (2, a_high), "angle just inside": (2, a_high - eps),
        "angle at its floor": (2, a_low), "joint at the state range": (3, s_high),
        "joint at the state floor": (4, -s_high), "z at its ceiling": (1, z_high),
    }  # fmt: skip
    env.reset(seed=0)
    for name, (index, value) in cases.items():
        qpos, qvel = u.init_qpos.copy(), u.init_qvel.copy()
        qpos[1] = 1.25  # healthy height unless the case moves it
        qpos[index] = value
        u.set_state(qpos, qvel)
        obs = torch.as_tensor(np.concatenate([u.data.qpos, u.data.qvel]), dtype=torch.float64)
        assert bool(task.terminated(obs)) == (not u.is_healthy), name
    env.close()


def test_a_hopper_that_never_terminates_has_no_termination(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import envs.tasks

    kwargs = {**envs.tasks._WITH_X, "terminate_when_unhealthy": False}
    monkeypatch.setattr(envs.tasks, "_WITH_X", kwargs)
    task = TASKS["Hopper-v5"]()
    assert task.terminated is None
    assert task.gym_kwargs == kwargs
    env = task.make_env(seed=0)
    assert not env.unwrapped._terminate_when_unhealthy  # type: ignore[attr-defined]
    env.close()


def test_hopper_health_counts_the_angle_in_the_state_range() -> None:
    """The env's state check covers qpos[2:] (the angle included): with an angle range wider
    than the state range, an angle of 200 is unhealthy by the state range alone."""
    from envs import costs

    env = gym.make(
        "Hopper-v5",
        exclude_current_positions_from_observation=False,
        healthy_angle_range=(-1e3, 1e3),
    )
    u = env.unwrapped
    env.reset(seed=0)
    ranges = {
        "state_range": tuple(u._healthy_state_range),  # type: ignore[attr-defined]
        "z_range": tuple(u._healthy_z_range),  # type: ignore[attr-defined]
        "angle_range": (-1e3, 1e3),
    }
    for angle in (50.0, 200.0, -200.0):
        qpos = u.init_qpos.copy()  # type: ignore[attr-defined]
        qpos[1], qpos[2] = 1.25, angle
        u.set_state(qpos, u.init_qvel.copy())  # type: ignore[attr-defined]
        obs = torch.as_tensor(np.concatenate([u.data.qpos, u.data.qvel]))  # type: ignore[attr-defined]
        assert bool(costs.hopper_healthy(obs, **ranges)) == u.is_healthy, angle  # type: ignore[attr-defined]
    assert not u.is_healthy  # type: ignore[attr-defined]
    env.close()


def test_hopper_cost_keeps_float64_throughout() -> None:
    """forward cost minus healthy_reward where healthy, with 0.1 kept as float64's 0.1."""
    from envs import costs

    g = torch.Generator().manual_seed(0)
    obs = torch.randn(50, 12, generator=g, dtype=torch.float64) * 0.1
    next_obs = torch.randn(50, 12, generator=g, dtype=torch.float64) * 0.1
    next_obs[:, 1] = torch.where(torch.arange(50) % 2 == 0, 1.25, 0.5)  # every other one too low
    action = torch.randn(50, 3, generator=g, dtype=torch.float64)
    weights = {"dt": 0.008, "forward_weight": 1.0, "ctrl_weight": 1e-3}
    ranges = {
        "state_range": (-100.0, 100.0),
        "z_range": (0.7, float("inf")),
        "angle_range": (-0.2, 0.2),
    }
    cost = costs.hopper_cost(obs, action, next_obs, healthy_reward=0.1, **weights, **ranges)
    healthy = costs.hopper_healthy(next_obs, **ranges)
    assert 0 < healthy.sum() < 50
    locomotion = costs.forward_cost(obs, action, next_obs, **weights)
    assert torch.equal(cost, torch.where(healthy, locomotion - 0.1, locomotion))
