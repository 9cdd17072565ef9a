"""Tasks: a gymnasium env plus, where it is known, its reward as a differentiable torch cost.

The built-in tasks below carry exact costs. Any other gymnasium env becomes a task without one
(its cost is then learned from the rewards): see `envs.registry` for the ids `make_task` takes
and `register_task` for giving an env of your own an exact cost.

To add a built-in task: write a ``_name() -> Task`` factory below (read the env's reward in the
gymnasium source, put the torch formula in ``envs/costs.py``, read weights off the env built
by :func:`_probe`, finish with :func:`_task`), add it to ``TASKS`` at the bottom, and add the
id to the parametrisations in ``tests/envs/test_tasks.py``, which check it against the env.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import FlattenObservation, RescaleAction

from envs import costs, stochastic
from envs.costs import RescaledCost
from worldmodel.errors import WorldModelError
from worldmodel.types import CostFn, OutcomesFn, TerminationFn


class UnknownTaskError(WorldModelError, ValueError):
    """An environment id that is not in :data:`TASKS`."""


class UnsupportedEnvError(WorldModelError, ValueError):
    """An environment whose spaces a world model cannot handle (discrete or unbounded actions),
    or that cannot be made here."""


def flatten_observations(env: gym.Env) -> gym.Env:
    """`env` with Dict, Tuple or multi-dimensional observations flattened to one float vector
    (the model reads flat vectors); an env with flat Box observations as it is."""
    space = env.observation_space
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return env
    try:
        return FlattenObservation(env)
    except (NotImplementedError, TypeError, ValueError):  # a space gymnasium cannot flatten
        return env  # check_spaces names it


def check_spaces(env: gym.Env) -> None:
    """Raise :class:`UnsupportedEnvError` unless actions are a bounded Box and observations a Box.

    The planners search a finite box and the model reads flat float vectors; a discrete, dict or
    unbounded space has no meaning for them.
    """
    name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    action, observation = env.action_space, env.observation_space
    if not isinstance(action, gym.spaces.Box):
        raise UnsupportedEnvError(
            f"environment {name!r} has a {action} action space; worldmodel needs continuous "
            "actions in a bounded Box (wrap discrete envs, or pick one listed by `wm tasks`)"
        )
    if not (np.isfinite(action.low).all() and np.isfinite(action.high).all()):
        raise UnsupportedEnvError(
            f"environment {name!r} has an unbounded action space {action}; worldmodel needs "
            "finite low/high bounds (give the env a bounded Box with a gymnasium.ActionWrapper)"
        )
    if not isinstance(observation, gym.spaces.Box):
        raise UnsupportedEnvError(
            f"environment {name!r} has a {observation} observation space; worldmodel needs flat "
            "float vectors in a Box (wrap it with gymnasium.wrappers.FlattenObservation)"
        )


@dataclass(frozen=True)
class Task:
    """An environment and, where known, its reward written as a torch cost.

    All callables take normalised actions in ``[-1, 1]`` (what :meth:`make_env` expects), are
    batched over any leading dims and work for any float dtype and device.
    """

    id: str
    """The id :meth:`make_env` makes, e.g. ``"Hopper-v5"`` or ``"my_pkg.envs:MyEnv-v0"``."""
    description: str
    """One line saying what the agent must do."""
    obs_dim: int
    """Observation size S of :meth:`make_env`'s env."""
    act_dim: int
    """Action size A."""
    cost: CostFn | None
    """``cost(obs [..., S], action [..., A], next_obs [..., S]) -> [...]``, exactly minus the
    env reward of that transition; differentiable wherever the reward is. None where no exact
    cost is known: runs then learn it (``--cost learned``)."""
    terminated: TerminationFn | None
    """``terminated(next_obs [..., S]) -> bool [...]`` equal to the env's flag; None if the env
    never terminates (time limits are truncations, see ``max_episode_steps``) or if the flag is
    not known exactly (see ``terminates``)."""
    planning_cost: CostFn | None
    """Same signature as ``cost``; a smooth surrogate with useful gradients where the reward
    is flat or piecewise constant (InvertedPendulum), otherwise ``cost`` itself (None with it)."""
    max_episode_steps: int
    """Steps after which the env truncates an episode."""
    dt: float
    """Simulated seconds per env step."""
    gym_kwargs: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """Extra ``gymnasium.make`` arguments the costs rely on (e.g. x position kept in obs)."""
    outcomes: OutcomesFn | None = field(default=None, compare=False)
    """``outcomes(obs [N, S], action [N, A]) -> [M, N, S]``: the M possible next observations
    of each transition, for tasks whose randomness is a discrete choice (stochastic.py); None
    for deterministic tasks."""
    random_dims: tuple[int, ...] = ()
    """Observation dims the task's randomness moves (empty for deterministic tasks)."""
    terminates: bool = True
    """Whether episodes may end before the time limit. Where ``terminated`` is None and this is
    True, a run with a learned cost learns the termination too; the built-in tasks set it to
    ``terminated is not None``."""

    def make_env(self, seed: int | None = None, render_mode: str | None = None) -> gym.Env:
        """Build the env with actions rescaled to ``[-1, 1]`` (and observations flattened).

        With a seed the env is reset once with it and its spaces are seeded, so later
        ``reset()`` calls and ``action_space.sample()`` are reproducible.
        """
        # render_mode only when asked for: an env need not take the argument.
        rendering = {} if render_mode is None else {"render_mode": render_mode}
        env = flatten_observations(gym.make(self.id, **rendering, **self.gym_kwargs))
        # Bounds in the action space's own dtype: others make Box warn about casting to it.
        dtype = env.action_space.dtype or np.float32
        env = RescaleAction(env, min_action=dtype.type(-1.0), max_action=dtype.type(1.0))
        if seed is not None:
            env.reset(seed=seed)
            env.action_space.seed(seed)
            env.observation_space.seed(seed)
        return env


@contextmanager
def _probe(env_id: str, gym_kwargs: Mapping[str, Any]) -> Iterator[gym.Env]:
    """A throwaway env to read dimensions, timestep and reward weights from."""
    env = flatten_observations(gym.make(env_id, **gym_kwargs))
    try:
        yield env
    finally:
        env.close()


def _task(
    env: gym.Env,
    gym_kwargs: Mapping[str, Any],
    description: str,
    cost: CostFn | None,
    terminated: TerminationFn | None = None,
    planning_cost: CostFn | None = None,
    *,
    terminates: bool | None = None,
    dt: float | None = None,
    **stochastic_fields: Any,
) -> Task:
    """Assemble a Task from a probe env and physical-action costs (rescaled here; None: none
    known). `terminates` defaults to `terminated is not None`, `dt` to the env's own."""
    check_spaces(env)
    assert env.spec is not None and env.spec.max_episode_steps is not None
    space = env.action_space
    assert isinstance(space, gym.spaces.Box)
    low = tuple(float(v) for v in np.asarray(space.low))
    high = tuple(float(v) for v in np.asarray(space.high))
    planning_cost = planning_cost or cost
    return Task(
        id=env.spec.id,
        description=description,
        obs_dim=int(np.prod(env.observation_space.shape)),
        act_dim=int(np.prod(space.shape)),
        cost=None if cost is None else RescaledCost(cost, low, high),
        terminated=terminated,
        planning_cost=None if planning_cost is None else RescaledCost(planning_cost, low, high),
        max_episode_steps=env.spec.max_episode_steps,
        dt=float(env.unwrapped.dt if dt is None else dt),  # type: ignore[attr-defined]
        gym_kwargs=dict(gym_kwargs),
        terminates=terminated is not None if terminates is None else terminates,
        **stochastic_fields,
    )


# Keeps x (qpos[0]) as obs[0] so forward velocity is (next_obs[0] - obs[0]) / dt.
_WITH_X = {"exclude_current_positions_from_observation": False}


def _pendulum() -> Task:
    with _probe("Pendulum-v1", {}) as env:
        cost = partial(costs.pendulum_cost, max_torque=float(env.unwrapped.max_torque))
        return _task(env, {}, "swing a torque-limited pendulum up and hold it upright", cost)


def _inverted_pendulum() -> Task:
    with _probe("InvertedPendulum-v5", {}) as env:
        return _task(
            env,
            {},
            "balance a pole on a cart; the episode ends when it tilts past 0.2 rad",
            costs.inverted_pendulum_cost,
            terminated=costs.inverted_pendulum_terminated,
            planning_cost=costs.inverted_pendulum_planning_cost,
        )


def _reacher() -> Task:
    with _probe("Reacher-v5", {}) as env:
        u = env.unwrapped
        cost = partial(
            costs.reacher_cost,
            dist_weight=float(u._reward_dist_weight),
            ctrl_weight=float(u._reward_control_weight),
        )
        return _task(env, {}, "move a 2-link arm's fingertip onto a random target", cost)


def _half_cheetah() -> Task:
    with _probe("HalfCheetah-v5", _WITH_X) as env:
        u = env.unwrapped
        cost = partial(
            costs.forward_cost,
            dt=float(u.dt),
            forward_weight=float(u._forward_reward_weight),
            ctrl_weight=float(u._ctrl_cost_weight),
        )
        return _task(env, _WITH_X, "run forward (+x) as fast as possible on a planar cheetah", cost)


def _hopper() -> Task:
    return _upright_walker(
        "Hopper-v5",
        "hop forward (+x) on one leg without falling (ends when torso is low or tilted)",
        state_range=True,
    )


def _walker2d() -> Task:
    return _upright_walker(
        "Walker2d-v5",
        "walk forward (+x) on two legs without falling (ends when torso is low or tilted)",
        state_range=False,
    )


def _upright_walker(env_id: str, description: str, state_range: bool) -> Task:
    """Hopper and Walker2d: forward velocity, control cost and a healthy bonus; the episode
    ends when unhealthy. Walker2d checks only torso height and angle, Hopper also a state range.
    """
    with _probe(env_id, _WITH_X) as env:
        u = env.unwrapped
        ranges = {
            "state_range": tuple(map(float, u._healthy_state_range)) if state_range else None,
            "z_range": tuple(map(float, u._healthy_z_range)),
            "angle_range": tuple(map(float, u._healthy_angle_range)),
        }
        cost = partial(
            costs.hopper_cost,
            dt=float(u.dt),
            forward_weight=float(u._forward_reward_weight),
            ctrl_weight=float(u._ctrl_cost_weight),
            healthy_reward=float(u._healthy_reward),
            **ranges,
        )
        terminated = (
            partial(costs.hopper_unhealthy, **ranges) if u._terminate_when_unhealthy else None
        )
        return _task(env, _WITH_X, description, cost, terminated=terminated)


def _gusty_ledge() -> Task:
    with _probe("GustyLedge-v0", {}) as env:
        return _task(
            env,
            {},
            "stand near a ledge while a random gust blows the cart left or right each step",
            stochastic.gusty_ledge_cost,
            outcomes=stochastic.gusty_ledge_outcomes,
            random_dims=(0,),
        )


def _pushed_inverted_pendulum() -> Task:
    with _probe("PushedInvertedPendulum-v0", {}) as env:
        return _task(
            env,
            {},
            "balance a pole on a cart that is kicked left or right before each step",
            costs.inverted_pendulum_cost,
            terminated=costs.inverted_pendulum_terminated,
            planning_cost=costs.inverted_pendulum_planning_cost,
            outcomes=stochastic.pushed_pendulum_outcomes,
            random_dims=(0, 2),
        )


TASKS: Mapping[str, Callable[[], Task]] = {
    "Pendulum-v1": _pendulum,
    "InvertedPendulum-v5": _inverted_pendulum,
    "Reacher-v5": _reacher,
    "HalfCheetah-v5": _half_cheetah,
    "Hopper-v5": _hopper,
    "Walker2d-v5": _walker2d,
    "GustyLedge-v0": _gusty_ledge,
    "PushedInvertedPendulum-v0": _pushed_inverted_pendulum,
}
"""Supported gymnasium ids -> factories; build tasks with :func:`make_task`."""


def make_task(env_id: str) -> Task:
    """`envs.registry.make_task`, kept here for the callers of its first home."""
    from envs.registry import make_task  # the registry builds on this module

    return make_task(env_id)
