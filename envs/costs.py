"""Differentiable torch costs (= minus the gymnasium reward) and termination predicates.

Every function is batched over arbitrary leading dimensions: ``obs`` and ``next_obs`` are
``[..., obs_dim]``, ``action`` is ``[..., act_dim]`` and results are ``[...]``. Nothing here
creates tensors on a fixed device or dtype, so the functions work for float32/float64 on CPU
or GPU. Costs in this module take *physical* actions (the units the raw env sees);
:class:`RescaledCost` adapts them to the normalised ``[-1, 1]`` actions the tasks expose.

Each formula mirrors the gymnasium 1.4 source of the env named in its docstring; constants
that the env hard-codes (rather than exposing as constructor arguments) are hard-coded here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from worldmodel.types import CostFn


def unnormalise_action(action: Tensor, low: tuple[float, ...], high: tuple[float, ...]) -> Tensor:
    """Map ``action [..., act_dim]`` from ``[-1, 1]`` to ``[low, high]`` like ``RescaleAction``.

    Like the wrapper this is a pure affine map without clipping: envs that clip do it themselves
    and the cost functions below replicate that where it affects the reward.
    """
    low_t = action.new_tensor(low)
    high_t = action.new_tensor(high)
    return low_t + (action + 1.0) * (0.5 * (high_t - low_t))


@dataclass(frozen=True)
class RescaledCost:
    """Wrap a physical-action cost so that it accepts normalised ``[-1, 1]`` actions.

    A dataclass rather than a closure so that tasks stay picklable (e.g. for worker processes).
    """

    raw: CostFn  # cost taking physical actions
    low: tuple[float, ...]  # env action-space lower bound, one entry per action dim
    high: tuple[float, ...]  # env action-space upper bound, one entry per action dim

    def __call__(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return self.raw(obs, unnormalise_action(action, self.low, self.high), next_obs)


def _ctrl(action: Tensor) -> Tensor:
    """Squared action norm ``[...]``, the ctrl term used by all the MuJoCo envs here."""
    return action.square().sum(dim=-1)


def pendulum_cost(obs: Tensor, action: Tensor, next_obs: Tensor, *, max_torque: float) -> Tensor:
    """Pendulum-v1: ``angle^2 + 0.1 angvel^2 + 0.001 torque^2`` on the state *before* the step.

    obs is ``[cos th, sin th, thdot]``; ``atan2`` recovers the env's ``angle_normalize(th)`` up
    to the sign at exactly +-pi, which squaring removes. The env clips the torque before costing
    it, so the gradient wrt the action vanishes outside ``[-max_torque, max_torque]``.
    """
    del next_obs  # the env costs the pre-step state
    angle = torch.atan2(obs[..., 1], obs[..., 0])
    torque = action[..., 0].clamp(-max_torque, max_torque)
    return angle.square() + 0.1 * obs[..., 2].square() + 0.001 * torque.square()


def reacher_cost(
    obs: Tensor, action: Tensor, next_obs: Tensor, *, dist_weight: float, ctrl_weight: float
) -> Tensor:
    """Reacher-v5: ``dist_weight * |fingertip - target| + ctrl_weight * |a|^2``.

    gymnasium >= 1.0 computes the distance *after* the physics step, so it is read from
    ``next_obs[..., -2:]`` (the xy of fingertip - target; both bodies sit at z = 0.01, so the
    env's 3-d norm equals this 2-d one).
    """
    del obs
    dist = torch.linalg.vector_norm(next_obs[..., -2:], dim=-1)
    return dist_weight * dist + ctrl_weight * _ctrl(action)


def forward_cost(
    obs: Tensor,
    action: Tensor,
    next_obs: Tensor,
    *,
    dt: float,
    forward_weight: float,
    ctrl_weight: float,
) -> Tensor:
    """HalfCheetah-v5 (and the locomotion part of Hopper-v5): ``-w_f * vx + w_c * |a|^2``.

    ``vx = (next_obs[..., 0] - obs[..., 0]) / dt`` needs the x position in ``obs[..., 0]``,
    i.e. the env built with ``exclude_current_positions_from_observation=False``. In float32 the
    difference of two rounded positions is off by up to ``ulp(|x|)``, i.e. ``ulp(|x|) / dt`` in
    the cost; pass float64 observations when the exact value matters.
    """
    x_velocity = (next_obs[..., 0] - obs[..., 0]) / dt
    return -forward_weight * x_velocity + ctrl_weight * _ctrl(action)


def hopper_healthy(
    obs: Tensor,
    *,
    state_range: tuple[float, float] | None,
    z_range: tuple[float, float],
    angle_range: tuple[float, float],
) -> Tensor:
    """Hopper-v5 ``is_healthy`` of an observation ``[..., 12]`` (x included) -> bool ``[...]``;
    Walker2d-v5's (``[..., 18]``) with ``state_range=None``: it checks only height and angle.

    The env checks ``state_vector()[2:]``, whose velocities are *unclipped*, whereas the
    observation clips them to +-10; so a velocity beyond the (default +-100) state range is
    invisible here. With default ranges that only matters for a blown-up simulation.
    Comparisons with NaN are False, so non-finite states are unhealthy, as in the env.
    """
    z, angle = obs[..., 1], obs[..., 2]
    healthy_z = (z > z_range[0]) & (z < z_range[1])
    healthy_angle = (angle > angle_range[0]) & (angle < angle_range[1])
    if state_range is None:
        return healthy_z & healthy_angle
    state = obs[..., 2:]
    healthy_state = ((state > state_range[0]) & (state < state_range[1])).all(dim=-1)
    return healthy_state & healthy_z & healthy_angle


def hopper_unhealthy(
    next_obs: Tensor,
    *,
    state_range: tuple[float, float] | None,
    z_range: tuple[float, float],
    angle_range: tuple[float, float],
) -> Tensor:
    """Hopper-v5 and Walker2d-v5 termination (``terminate_when_unhealthy=True``): not healthy
    (:func:`hopper_healthy`) -> bool ``[...]``."""
    return ~hopper_healthy(
        next_obs, state_range=state_range, z_range=z_range, angle_range=angle_range
    )


def hopper_cost(
    obs: Tensor,
    action: Tensor,
    next_obs: Tensor,
    *,
    dt: float,
    forward_weight: float,
    ctrl_weight: float,
    healthy_reward: float,
    state_range: tuple[float, float] | None,
    z_range: tuple[float, float],
    angle_range: tuple[float, float],
) -> Tensor:
    """Hopper-v5 and Walker2d-v5: :func:`forward_cost` minus ``healthy_reward`` if ``next_obs``
    is healthy (:func:`hopper_healthy`).

    Since v5 the healthy reward is only paid when the post-step state is healthy (v4 paid it
    on every step), so the terminating step earns no healthy reward. That term is piecewise
    constant: its gradient is zero.
    """
    healthy = hopper_healthy(
        next_obs, state_range=state_range, z_range=z_range, angle_range=angle_range
    )
    locomotion = forward_cost(
        obs, action, next_obs, dt=dt, forward_weight=forward_weight, ctrl_weight=ctrl_weight
    )
    return locomotion - healthy_reward * healthy.to(locomotion.dtype)


_POLE_ANGLE_LIMIT = 0.2  # hard-coded in InvertedPendulum-v5.step, not a constructor argument


def inverted_pendulum_terminated(next_obs: Tensor) -> Tensor:
    """InvertedPendulum-v5: non-finite obs or ``|pole angle| > 0.2`` -> bool ``[...]``.

    obs is ``[cart x, pole angle, cart vx, pole angular velocity]``.
    """
    return ~torch.isfinite(next_obs).all(dim=-1) | (next_obs[..., 1].abs() > _POLE_ANGLE_LIMIT)


def inverted_pendulum_cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """InvertedPendulum-v5: -1 while alive, 0 on the terminating step (v5 pays nothing then).

    Piecewise constant with no gradient at all; planners should use
    :func:`inverted_pendulum_planning_cost`.
    """
    del obs, action
    return -(~inverted_pendulum_terminated(next_obs)).to(next_obs.dtype)


def inverted_pendulum_planning_cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Smooth surrogate of :func:`inverted_pendulum_cost` for gradient-based planning.

    Adds to the true cost a quadratic pull towards the upright, centred, resting state.
    The angle is scaled by the termination limit so that reaching it costs 1, the same as
    losing the alive reward; the cart and rate weights are small so they only break ties
    (keeping the cart off the rail ends at +-1 and damping oscillations).
    """
    x, angle, vx, angvel = next_obs.unbind(dim=-1)
    shaping = (
        (angle / _POLE_ANGLE_LIMIT).square()
        + 0.1 * x.square()
        + 0.01 * vx.square()
        + 0.01 * angvel.square()
    )
    return inverted_pendulum_cost(obs, action, next_obs) + shaping
