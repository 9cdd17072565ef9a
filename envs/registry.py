"""Which task an environment id names, and `register_task` for giving your own env a cost.

`make_task` takes:

- a built-in task (`envs.tasks.TASKS`, exact torch costs), e.g. ``"Pendulum-v1"``;
- a gymnasium id registered with `register_task` (your exact cost and termination, if any);
- any other registered gymnasium id with a bounded Box action space, e.g. ``"Swimmer-v5"``:
  a task without an exact cost, which runs learn from the rewards;
- gymnasium's ``"module:id"`` form, e.g. ``"my_pkg.envs:MyEnv-v0"``: the module is imported
  first (it registers the env, and may call `register_task`), then the id is looked up as above;
- ``"dm_control/<domain>-<task>-v0"``, DeepMind Control through shimmy (`envs.dmc`).

Dict, Tuple and multi-dimensional observations are flattened; discrete or unbounded actions,
unknown ids, modules that fail to import and envs that cannot be made are one-line errors.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable
from functools import cache, partial

import gymnasium as gym

from envs import dmc
from envs.tasks import (
    TASKS,
    Task,
    UnknownTaskError,
    UnsupportedEnvError,
    _task,
    flatten_observations,
)
from worldmodel.types import CostFn, TerminationFn

ANY_ENV_NOTE = (
    "and any gymnasium env with a bounded Box action space, its cost learned: --env Swimmer-v5, "
    "--env my_pkg.envs:MyEnv-v0, --env dm_control/cheetah-run-v0 (docs/custom_envs.md)"
)
"""What `wm tasks` says below the built-in tasks."""
DEFAULT_TIME_LIMIT = 1000
"""Steps after which an env registered without a time limit is truncated."""

_REGISTERED: dict[str, Callable[[str], Task]] = {}
"""gymnasium ids given to `register_task` -> builders of their task (from the id to make)."""


def register_task(
    env_id: str,
    *,
    cost: CostFn | None = None,
    terminated: TerminationFn | None = None,
    planning_cost: CostFn | None = None,
    terminates: bool = True,
    description: str | None = None,
) -> None:
    """Make gymnasium id `env_id` (register the env with `gymnasium.register` first) a task.

    Args:
        cost: ``cost(obs [..., S], action [..., A], next_obs [..., S]) -> [...]``, exactly
            minus the env's reward, in torch and in the env's own action units (it is rescaled
            to the [-1, 1] actions the agents use). None: runs learn it from the rewards.
        terminated: ``terminated(next_obs [..., S]) -> bool [...]``, the env's termination
            flag. None: learned where the cost is learned, unless `terminates` is False.
        planning_cost: a smooth surrogate of `cost` for planning (default: `cost`).
        terminates: False if episodes only end at the time limit (nothing to learn).
        description: one line for `wm tasks` (default: the env's entry point).

    Registering again replaces the earlier task. Example::

        gymnasium.register("Ball-v0", entry_point=BallEnv, max_episode_steps=100)
        envs.register_task("Ball-v0", cost=lambda s, a, s2: s2[..., 0].square())
    """
    for name, fn in (("cost", cost), ("terminated", terminated), ("planning_cost", planning_cost)):
        if fn is not None and not callable(fn):
            raise TypeError(f"register_task: {name} must be callable or None, got {fn!r}")
    if planning_cost is not None and cost is None:
        raise ValueError("register_task: a planning_cost needs the exact cost it stands in for")
    _REGISTERED[env_id] = partial(
        _gymnasium_task,
        cost=cost,
        terminated=terminated,
        planning_cost=planning_cost,
        terminates=terminates or terminated is not None,
        description=description,
    )
    _build.cache_clear()


def registered() -> list[str]:
    """The ids given to `register_task` in this process, sorted."""
    return sorted(_REGISTERED)


def make_task(env_id: str) -> Task:
    """The :class:`Task` for `env_id` (module doc); raises `UnknownTaskError` for an id that
    names no env, `UnsupportedEnvError` for an env a world model cannot use."""
    return _build(env_id)


def make_env(env_id: str, seed: int | None = None, render_mode: str | None = None) -> gym.Env:
    """Shorthand for ``make_task(env_id).make_env(seed, render_mode)``."""
    return make_task(env_id).make_env(seed=seed, render_mode=render_mode)


@cache
def _build(env_id: str) -> Task:
    # Cached because each task is read off a probe env; Task is immutable so sharing is safe.
    module, _, name = env_id.rpartition(":")
    if module:
        _import(module, env_id)
    if name in TASKS:
        task = TASKS[name]()
    elif name in _REGISTERED:
        task = _REGISTERED[name](env_id)
    else:
        task = _gymnasium_task(env_id)
    # The id given, so that make_env imports the module again in a fresh process.
    return task if task.id == env_id else dataclasses.replace(task, id=env_id)


def _import(module: str, env_id: str) -> None:
    """Import the module of a ``module:id``; any failure is one line."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # the user's module may raise anything while it is imported
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UnknownTaskError(
            f"cannot import module {module!r} of environment {env_id!r} "
            f"({type(exc).__name__}: {first}); check that it is importable from here "
            "(installed, or on PYTHONPATH) and that importing it registers the env"
        ) from None


def _spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """gymnasium's spec of `env_id` (the module of a ``module:id`` already imported)."""
    module, _, name = env_id.rpartition(":")
    if dmc.is_dm_control(name):
        dmc.register()
    try:
        return gym.spec(name)
    except gym.error.Error as exc:
        where = f"module {module!r} registers no env {name!r}; " if module else ""
        raise UnknownTaskError(
            f"unknown environment {env_id!r} ({where}gymnasium: {str(exc).rstrip('.')}); pass "
            "a registered gymnasium id, `module:Id` for an env your package registers, or a "
            f"task with an exact cost: {', '.join(sorted(TASKS))} (see `wm tasks`)"
        ) from None


def _gymnasium_task(
    env_id: str,
    *,
    cost: CostFn | None = None,
    terminated: TerminationFn | None = None,
    planning_cost: CostFn | None = None,
    terminates: bool = True,
    description: str | None = None,
) -> Task:
    """The task of any gymnasium env: its spaces and time limit read off a probe env."""
    spec = _spec(env_id)
    gym_kwargs = {} if spec.max_episode_steps else {"max_episode_steps": DEFAULT_TIME_LIMIT}
    # gymnasium's warnings (an outdated version, ...) would make a refusal more than one line:
    # they are passed on only where the env could be made.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            env = gym.make(env_id, **gym_kwargs)
        except Exception as exc:  # a third-party env may fail in any way while it is made
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise UnsupportedEnvError(
                f"cannot make environment {env_id!r} ({type(exc).__name__}: {first}); check "
                "that gymnasium.make works for it here (its dependencies installed)"
            ) from None
    for warning in caught:
        warnings.warn(warning.message, warning.category, stacklevel=2)
    env = flatten_observations(env)
    try:
        entry = spec.entry_point if isinstance(spec.entry_point, str) else spec.name
        if dmc.is_dm_control(spec.id):
            entry = f"DeepMind Control {spec.name}"
            terminates = False  # the suite's episodes only end at the time limit
        return _task(
            env,
            gym_kwargs,
            description or f"{entry} ({'exact' if cost else 'learned'} cost)",
            cost,
            terminated,
            planning_cost,
            terminates=terminates,
            dt=_timestep(env),
        )
    finally:
        env.close()


def _timestep(env: gym.Env) -> float:
    """Seconds per step: the env's `dt` (MuJoCo), DeepMind Control's control timestep, or one
    frame at the env's render fps (only videos use it)."""
    unwrapped = env.unwrapped
    if hasattr(unwrapped, "dt"):
        return float(unwrapped.dt)
    dm_step = dmc.control_timestep(unwrapped)
    if dm_step is not None:
        return dm_step
    return 1.0 / float(env.metadata.get("render_fps") or 20)
