"""The torch costs/terminations of every task against the real gymnasium env, step by step."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import Tensor

from envs import TASKS, Task, UnknownTaskError, make_env, make_task

ALL = sorted(TASKS)
TERMINATING = ["Hopper-v5", "InvertedPendulum-v5", "PushedInvertedPendulum-v0", "Walker2d-v5"]
ALIVE_BONUS = {
    "InvertedPendulum-v5",
    "PushedInvertedPendulum-v0",
}  # a flat reward: a surrogate plans
STEPS = 1000


@pytest.fixture(autouse=True, scope="module")
def _mujoco_log_outside_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """MuJoCo writes MUJOCO_LOG.TXT into the cwd on any compiler warning (hopper.xml uses the
    deprecated 'settotalmass'); keep it out of the checkout."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("mujoco_log"))
    try:
        yield
    finally:
        os.chdir(cwd)


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


def fresh_task(env_id: str) -> Task:
    """The task built by its factory now, not make_task's cached one (so that this test, not
    whichever ran first, is the one that runs the factory)."""
    return TASKS[env_id]()


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


def test_hopper_terminated_matches_env_on_every_health_condition() -> None:
    # Random rollouts only ever fall over (angle); set states that also break the z and
    # joint-range conditions, each failing about a third of the time.
    task = fresh_task("Hopper-v5")
    assert task.terminated is not None
    env = task.make_env(seed=0)
    hopper = env.unwrapped
    rng = np.random.default_rng(1)
    observations, healthy = [], []
    for _ in range(600):
        qpos = np.concatenate(
            [rng.uniform(-1, 1, 1), rng.uniform(0.6, 0.9, 1), rng.uniform(-0.3, 0.3, 1)]
            + [rng.uniform(-150, 150, 3) if rng.random() < 0.3 else rng.uniform(-1, 1, 3)]
        )
        hopper.set_state(qpos, rng.uniform(-20, 20, 6))  # type: ignore[attr-defined]
        observations.append(hopper._get_obs())  # type: ignore[attr-defined]
        healthy.append(hopper.is_healthy)  # type: ignore[attr-defined]
    env.close()
    healthy_ = np.array(healthy)
    assert 100 <= healthy_.sum() <= 500
    predicted = task.terminated(torch.as_tensor(np.stack(observations)))
    np.testing.assert_array_equal(predicted.numpy(), ~healthy_)


def test_walker2d_terminated_matches_env_on_height_and_angle_only() -> None:
    """Walker2d-v5 checks torso height (0.8, 2) and angle (-1, 1), not a state range: states
    that break each, and joint angles far outside Hopper's state range, set one by one."""
    task = fresh_task("Walker2d-v5")
    assert task.terminated is not None
    env = task.make_env(seed=0)
    walker = env.unwrapped
    rng = np.random.default_rng(2)
    observations, healthy = [], []
    for _ in range(600):
        qpos = np.concatenate(
            [rng.uniform(-1, 1, 1), rng.uniform(0.6, 2.2, 1), rng.uniform(-1.3, 1.3, 1)]
            + [rng.uniform(-150, 150, 6) if rng.random() < 0.3 else rng.uniform(-1, 1, 6)]
        )
        walker.set_state(qpos, rng.uniform(-20, 20, 9))  # type: ignore[attr-defined]
        observations.append(walker._get_obs())  # type: ignore[attr-defined]
        healthy.append(walker.is_healthy)  # type: ignore[attr-defined]
    env.close()
    healthy_ = np.array(healthy)
    assert 100 <= healthy_.sum() <= 500
    predicted = task.terminated(torch.as_tensor(np.stack(observations)))
    np.testing.assert_array_equal(predicted.numpy(), ~healthy_)


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


@pytest.mark.parametrize("env_id", ALL)
def test_task_matches_env(env_id: str) -> None:
    task = fresh_task(env_id)
    cached = make_task(env_id)
    assert make_task(env_id) is cached and cached.description == task.description
    assert task.id == env_id and isinstance(task.description, str)
    assert task.description and "\n" not in task.description
    env = make_env(env_id, seed=3)
    assert env.observation_space.shape == (task.obs_dim,)
    assert env.action_space.shape == (task.act_dim,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert env.spec is not None and env.spec.max_episode_steps == task.max_episode_steps
    assert task.dt > 0 and task.dt == env.unwrapped.dt  # type: ignore[attr-defined]
    first = env.reset()[0]
    assert np.array_equal(first, make_env(env_id, seed=3).reset()[0])
    env.close()


def test_unknown_task_error_lists_supported_tasks() -> None:
    with pytest.raises(UnknownTaskError) as info:
        make_task("Foo-v0")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message and "'Foo-v0'" in message and "module:Id" in message
    assert ", ".join(ALL) in message  # sorted, comma-separated
    with pytest.raises(UnknownTaskError, match="Hopper-v99"):
        make_env("Hopper-v99")


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


def test_inverted_pendulum_planning_cost_is_the_cost_plus_the_stated_pull() -> None:
    task = fresh_task("InvertedPendulum-v5")
    obs = torch.zeros(2, 4, dtype=torch.float64)
    nxt = torch.tensor([[0.5, 0.1, -1.0, 2.0], [0.0, 0.3, 0.0, 0.0]], dtype=torch.float64)
    action = torch.zeros(2, 1, dtype=torch.float64)
    pull = (0.1 / 0.2) ** 2 + 0.1 * 0.25 + 0.01 * 1.0 + 0.01 * 4.0
    # alive: -1 + the pull; past 0.2 rad: 0 (terminated) + (0.3 / 0.2)^2
    expected = torch.tensor([-1.0 + pull, (0.3 / 0.2) ** 2], dtype=torch.float64)
    torch.testing.assert_close(task.planning_cost(obs, action, nxt), expected)


def test_make_env_seeds_its_spaces_and_passes_the_render_mode() -> None:
    task = make_task("Pendulum-v1")
    first, second = task.make_env(seed=3), task.make_env(seed=3)
    np.testing.assert_array_equal(first.action_space.sample(), second.action_space.sample())
    np.testing.assert_array_equal(
        first.observation_space.sample(), second.observation_space.sample()
    )
    assert task.make_env(render_mode="rgb_array").render_mode == "rgb_array"


def test_unsupported_spaces_name_the_env() -> None:
    from envs.tasks import UnsupportedEnvError, check_spaces

    with pytest.raises(UnsupportedEnvError, match="CartPole-v1"):
        check_spaces(gym.make("CartPole-v1"))
    unbounded = gym.make("Pendulum-v1")
    unbounded.action_space = gym.spaces.Box(-np.inf, 1.0, (1,), np.float32)
    with pytest.raises(UnsupportedEnvError, match="unbounded"):
        check_spaces(unbounded)
    upper = gym.make("Pendulum-v1")
    upper.action_space = gym.spaces.Box(-1.0, np.inf, (1,), np.float32)
    with pytest.raises(UnsupportedEnvError, match="unbounded"):
        check_spaces(upper)


def test_make_env_passes_the_render_mode() -> None:
    env = make_env("Pendulum-v1", render_mode="rgb_array")
    assert env.render_mode == "rgb_array"
    env.close()
    assert make_env("Pendulum-v1").render_mode is None


def test_an_env_without_a_spec_is_named_by_its_class() -> None:
    from gymnasium.envs.classic_control import CartPoleEnv, PendulumEnv

    from envs.tasks import UnsupportedEnvError, check_spaces

    check_spaces(PendulumEnv())  # no spec, supported spaces: accepted
    with pytest.raises(UnsupportedEnvError, match="environment 'CartPoleEnv' has a Discrete"):
        check_spaces(CartPoleEnv())


def test_a_task_needs_a_time_limit() -> None:
    from gymnasium.envs.classic_control import PendulumEnv
    from gymnasium.envs.registration import EnvSpec

    from envs import costs
    from envs.tasks import _task

    env = PendulumEnv()
    env.spec = EnvSpec("Endless-v0", max_episode_steps=None)
    with pytest.raises(AssertionError):
        _task(env, {}, "never truncated", costs.inverted_pendulum_cost)


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
