"""Imagination and the one cost of an imagined trajectory, for MPC, policy learning and evaluation.

    J = sum_{t<H} gamma^t alive[t] (c(s[t], a[t], s[t+1]) + w_u P[t])  +  gamma_V alive[H] V(s[H])

c is the task's intrinsic cost, P the uncertainty penalty (`UncertaintyPenalty`), V a cost-to-go
beyond the horizon (the critic) and alive[t] is 1 while no earlier step was predicted to end the
episode: after a termination nothing more is earned or paid. Time-major: states [T+1, B, S]
hold s[0..T], actions and latents [T, B, ...].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from worldmodel.cost.uncertainty import UncertaintyPenalty
from worldmodel.forward.layers import eval_mode
from worldmodel.types import CostFn, TerminationFn, ValueFn, WorldModel


@dataclass(frozen=True)
class Trajectory:
    """An imagined trajectory: states [T+1, B, S] (s[0..T]), actions [T, B, A], latents
    z [T, B, Z] it was unrolled under."""

    states: Tensor
    actions: Tensor
    z: Tensor

    def detach(self) -> Trajectory:
        return Trajectory(self.states.detach(), self.actions.detach(), self.z.detach())


@dataclass(frozen=True)
class TrajectoryTerms:
    """The parts of J for a batch of trajectories.

    total [B]: J. costs [T, B]: c per step (undiscounted, unmasked). weights [T, B]: what J
    weighs step t by (gamma^t alive[t]). continues [T, B]: 0 where s[t+1] ended the episode.
    alive [T+1, B]. value [B] or None: the weighted terminal term.
    uncertainty, penalty [T, B] or None: U and P, where a penalty is configured.
    """

    total: Tensor
    costs: Tensor
    weights: Tensor
    continues: Tensor
    alive: Tensor
    value: Tensor | None = None
    uncertainty: Tensor | None = None
    penalty: Tensor | None = None


def alive_weights(continues: Tensor) -> Tensor:
    """Float continues [T, B] -> alive [T+1, B]: 1 while no earlier step terminated.

    alive[t] says s[t] is reached, so the transition into a termination is still paid, and
    alive[T] gates the cost-to-go beyond the horizon.
    """
    return torch.cumprod(torch.cat([torch.ones_like(continues[:1]), continues]), 0)


def imagine(model: WorldModel, policy: nn.Module, start_states: Tensor, z: Tensor) -> Trajectory:
    """Roll `policy` (states [B, S] -> actions [B, A]) through `model` from start_states [B, S]
    under latents z [T, B, Z], dropout off (the mean model). Keeps the graph."""
    s, states, actions = start_states, [start_states], []
    with eval_mode(model):
        for z_t in z.unbind(0):
            actions.append(policy(s))
            s = model.step(s, actions[-1], z_t)
            states.append(s)
    return Trajectory(torch.stack(states), torch.stack(actions), z)


class TrajectoryCost:
    """J of imagined trajectories (module doc); differentiable in the states and actions.

    Args:
        cost: the task's intrinsic cost c(s, a, s') [..., ] (e.g. `Task.planning_cost`).
        terminated: predicted termination of s' (None: the task never ends early).
        value: cost-to-go V(s[H]) beyond the horizon (None: no terminal term).
        gamma: per-step discount.
        value_discount: weight of V(s[H]); None means gamma^H.
        penalty: the uncertainty penalty P (calibrated on real data), or None.
        penalty_weight: w_u. With a penalty and w_u = 0, P is still measured (no gradient).
    """

    def __init__(
        self,
        cost: CostFn,
        terminated: TerminationFn | None = None,
        value: ValueFn | None = None,
        *,
        gamma: float = 1.0,
        value_discount: float | None = None,
        penalty: UncertaintyPenalty | None = None,
        penalty_weight: float = 0.0,
    ) -> None:
        if not 0.0 < gamma <= 1.0 or penalty_weight < 0:
            raise ValueError("need gamma in (0, 1] and penalty_weight >= 0")
        if penalty_weight > 0 and penalty is None:
            raise ValueError("penalty_weight > 0 needs an UncertaintyPenalty")
        self.cost, self.terminated, self.value = cost, terminated, value
        self.gamma, self.value_discount = gamma, value_discount
        self.penalty, self.penalty_weight = penalty, penalty_weight

    def __call__(self, trajectory: Trajectory) -> TrajectoryTerms:
        """The terms of J for `trajectory` (see `TrajectoryTerms`)."""
        states, actions = trajectory.states, trajectory.actions
        horizon = actions.shape[0]
        costs = self.cost(states[:-1], actions, states[1:])  # [T, B]
        continues = (
            (~self.terminated(states[1:])).to(costs.dtype)
            if self.terminated is not None
            else torch.ones_like(costs)
        )
        alive = alive_weights(continues)
        weights = alive[:horizon]
        if self.gamma != 1.0:
            discount = self.gamma ** torch.arange(horizon, device=costs.device, dtype=costs.dtype)
            weights = weights * discount[:, None]
        per_step = costs
        uncertainty = penalty = None
        if self.penalty is not None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.penalty_weight > 0):
                uncertainty = self.penalty.raw(states[0], actions, trajectory.z)
                penalty = self.penalty(uncertainty)
            if self.penalty_weight > 0:
                per_step = per_step + self.penalty_weight * penalty
        # Without termination or discount every weight is 1: skip the product in the hot loop.
        unweighted = self.terminated is None and self.gamma == 1.0
        total = per_step.sum(0) if unweighted else (weights * per_step).sum(0)
        value = None
        if self.value is not None:
            discount = self.gamma**horizon if self.value_discount is None else self.value_discount
            value = discount * alive[horizon] * self.value(states[-1])
            total = total + value
        return TrajectoryTerms(total, costs, weights, continues, alive, value, uncertainty, penalty)
