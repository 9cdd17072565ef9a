"""A task's ids, dims, bounds, time limit and envs: make_task, make_env, check_spaces."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from task_cases import ALL, _mujoco_log_outside_repo, fresh_task  # noqa: F401 (autouse fixture)

from envs import UnknownTaskError, make_env, make_task


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
