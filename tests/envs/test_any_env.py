"""envs.registry: any gymnasium env as a task, `module:id`, `register_task`, and the envs that
cannot be one, each refused in one line."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs import TASKS, UnknownTaskError, UnsupportedEnvError, make_task, register_task, registry


class Drift(gym.Env):
    """x' = x + 0.1 a on a line, reward -x'^2, ends past |x| > 1; actions in [-2, 2] (not the
    [-1, 1] the agents use), observations a Dict of the position and a constant 2-vector."""

    def __init__(self, unbounded: bool = False, dict_obs: bool = True) -> None:
        high = np.inf if unbounded else 2.0
        self.action_space = gym.spaces.Box(-high, high, (1,), np.float32)
        box = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        pair = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.dict_obs = dict_obs
        self.observation_space = gym.spaces.Dict({"x": box, "c": pair}) if dict_obs else box
        self.x = 0.0

    def _obs(self) -> dict | np.ndarray:
        x = np.array([self.x], np.float32)
        return {"x": x, "c": np.array([0.5, -0.5], np.float32)} if self.dict_obs else x

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-0.5, 0.5))
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple:
        self.x += 0.1 * float(np.clip(action[0], -2.0, 2.0))
        return self._obs(), -(self.x**2), abs(self.x) > 1.0, False, {}


@pytest.fixture
def gym_ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Test envs registered with gymnasium for one test, and the task cache cleared after."""
    for env_id, kwargs, limit in (
        ("Drift-v0", {}, 50),
        ("FlatDrift-v0", {"dict_obs": False}, 50),
        ("UnboundedDrift-v0", {"unbounded": True}, 50),
        ("EndlessDrift-v0", {"dict_obs": False}, None),
    ):
        spec = gym.envs.registration.EnvSpec(
            env_id, entry_point=Drift, max_episode_steps=limit, kwargs=kwargs
        )
        monkeypatch.setitem(gym.registry, env_id, spec)
    monkeypatch.setattr(registry, "_REGISTERED", {})
    yield
    registry._build.cache_clear()


def test_any_gymnasium_env_is_a_task_without_an_exact_cost(gym_ids: None) -> None:
    task = make_task("Drift-v0")
    assert task.id == "Drift-v0" and task.cost is None and task.planning_cost is None
    assert task.terminated is None and task.terminates  # unknown: learned with the cost
    assert task.obs_dim == 3 and task.act_dim == 1 and task.max_episode_steps == 50
    env = task.make_env(seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3,) and env.observation_space.shape == (3,)  # the Dict, flattened
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    x = obs[2]  # FlattenObservation orders a Dict's keys: c (2), then x
    np.testing.assert_array_equal(obs[:2], [0.5, -0.5])
    next_obs, reward, *_ = env.step(np.array([1.0], np.float32))  # +1 is the env's +2
    assert next_obs[2] == pytest.approx(x + 0.2, abs=1e-6)
    assert reward == pytest.approx(-((x + 0.2) ** 2), abs=1e-5)
    assert make_task("Drift-v0") is task  # cached


def test_an_env_without_a_time_limit_gets_the_default_one(gym_ids: None) -> None:
    task = make_task("EndlessDrift-v0")
    assert task.max_episode_steps == registry.DEFAULT_TIME_LIMIT
    env = task.make_env(seed=0)
    assert env.spec is not None and env.spec.max_episode_steps == registry.DEFAULT_TIME_LIMIT


def test_a_registered_task_has_its_exact_cost_in_normalised_actions(gym_ids: None) -> None:
    def cost(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return next_obs[..., 0].square() + action[..., 0].square()  # physical action

    def terminated(next_obs: torch.Tensor) -> torch.Tensor:
        return next_obs[..., 0].abs() > 1.0

    register_task("FlatDrift-v0", cost=cost, terminated=terminated, description="drift")
    task = make_task("FlatDrift-v0")
    assert task.description == "drift" and task.terminated is terminated and task.terminates
    assert registry.registered() == ["FlatDrift-v0"]
    s, s2 = torch.zeros(2, 1), torch.tensor([[0.5], [2.0]])
    # Normalised +0.5 is the env's +1, so the action term is 1.
    torch.testing.assert_close(task.cost(s, torch.full((2, 1), 0.5), s2), torch.tensor([1.25, 5.0]))
    assert task.planning_cost(s, torch.zeros(2, 1), s2).tolist() == [0.25, 4.0]
    # Registering again replaces it (the cached task too).
    register_task("FlatDrift-v0", terminates=False)
    again = make_task("FlatDrift-v0")
    assert again.cost is None and not again.terminates


def test_register_task_refuses_what_it_cannot_use() -> None:
    with pytest.raises(TypeError, match="cost must be callable"):
        register_task("FlatDrift-v0", cost=3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="planning_cost needs the exact cost"):
        register_task("FlatDrift-v0", planning_cost=lambda s, a, s2: s2.sum(-1))


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_module_colon_id_imports_the_module_that_registers_the_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gym_ids: None
) -> None:
    _module(
        tmp_path,
        monkeypatch,
        "wm_test_user_envs",
        """
        import gymnasium as gym
        import envs
        from tests_envs_drift import Drift
        gym.register("UserDrift-v0", entry_point=Drift, max_episode_steps=20,
                     kwargs={"dict_obs": False})
        envs.register_task("UserDrift-v0", cost=lambda s, a, s2: s2[..., 0].square())
    """,
    )
    monkeypatch.setitem(sys.modules, "tests_envs_drift", sys.modules[__name__])
    monkeypatch.delitem(gym.registry, "UserDrift-v0", raising=False)
    task = make_task("wm_test_user_envs:UserDrift-v0")
    assert "UserDrift-v0" in gym.registry  # the import registered it (and cleaned up after)
    assert task.id == "wm_test_user_envs:UserDrift-v0" and task.max_episode_steps == 20
    assert task.cost is not None and task.obs_dim == 1
    env = task.make_env(seed=1)  # the id gymnasium makes, module and all
    assert env.reset(seed=1)[0].shape == (1,)
    monkeypatch.delitem(gym.registry, "UserDrift-v0")


def test_discrete_and_unbounded_actions_are_refused(gym_ids: None) -> None:
    with pytest.raises(UnsupportedEnvError, match="'CartPole-v1' has a Discrete.2. action"):
        make_task("CartPole-v1")
    with pytest.raises(UnsupportedEnvError, match="unbounded action space"):
        make_task("UnboundedDrift-v0")


@pytest.mark.parametrize(
    ("env_id", "words"),
    [
        ("Nope-v0", ("unknown environment 'Nope-v0'", "module:Id", "Pendulum-v1")),
        ("Hopper-v99", ("unknown environment 'Hopper-v99'", "v5")),
        ("json:Nope-v0", ("module 'json' registers no env 'Nope-v0'",)),
        ("no_such_pkg.envs:MyEnv-v0", ("cannot import module 'no_such_pkg.envs'",
                                       "ModuleNotFoundError", "PYTHONPATH")),
    ],
)  # fmt: skip
def test_ids_that_name_no_env_are_one_line_errors(env_id: str, words: tuple[str, ...]) -> None:
    with pytest.raises(UnknownTaskError) as info:
        make_task(env_id)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_a_module_that_raises_on_import_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _module(tmp_path, monkeypatch, "wm_test_broken_envs", "raise RuntimeError('boom\\nmore')\n")
    with pytest.raises(UnknownTaskError, match=r"\(RuntimeError: boom\); check") as info:
        make_task("wm_test_broken_envs:Any-v0")
    assert "\n" not in str(info.value)


def test_an_env_that_cannot_be_made_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> gym.Env:
        raise OSError("libfoo.so: cannot open shared object file\nsecond line")

    monkeypatch.setitem(gym.registry, "Broken-v0", gym.envs.registration.EnvSpec(
        "Broken-v0", entry_point=broken, max_episode_steps=10))  # fmt: skip
    with pytest.raises(UnsupportedEnvError, match=r"cannot make environment 'Broken-v0' \(OSE"):
        make_task("Broken-v0")


def test_builtin_tasks_are_found_first_and_keep_their_costs() -> None:
    for env_id in TASKS:
        assert make_task(env_id).cost is not None
    assert not make_task("Pendulum-v1").terminates and make_task("Hopper-v5").terminates
