"""Model-predictive control: plan through the world model, execute the first action, shift, repeat.

The objective handed to the planner unrolls the forward model from the current state for each
candidate action sequence, with K latent samples z ~ N(0, I) drawn once per decision and shared by
all candidates (common random numbers: candidates are compared on the same futures, and a gradient
planner sees a fixed objective). Its gradient with respect to the actions is backpropagation
through time, i.e. the Kelley-Bryson adjoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from agents.critic import alive_weights
from agents.planners import Planner, shift_plan
from envs.costs import CostFn, TerminationFn
from worldmodel.forward import ForwardModel, frozen
from worldmodel.perception import Perception

log = logging.getLogger(__name__)

ValueFn = Callable[[Tensor], Tensor]
"""Terminal value hook: states [..., S] -> predicted cost-to-go [...]."""
ActionProposal = Callable[[Tensor, int], Tensor]
"""Policy hook: state [S], horizon T -> a proposed action sequence [T, A] to warm-start from."""


@dataclass(frozen=True)
class Decision:
    """What the agent did at one step (for logging)."""

    action: np.ndarray  #: [A] executed action, normalised units
    planned_cost: float  #: the planner's predicted cost of the whole plan
    planned_step_cost: float  #: predicted cost of the first step alone
    seconds: float  #: wall time of the decision
    fallback: bool  #: the planner failed (non-finite) and the safe action was used


class MPCAgent:
    """`act(obs) -> action` by planning through `model`; `reset()` between episodes."""

    def __init__(
        self,
        model: ForwardModel,
        perception: Perception,
        cost: CostFn,
        planner: Planner,
        *,
        latent_samples: int = 5,
        terminated: TerminationFn | None = None,
        terminal_value: ValueFn | None = None,
        value_discount: float = 1.0,
        uncertainty_weight: float = 0.0,
        uncertainty_masks: int = 4,
        proposal: ActionProposal | None = None,
        seed: int = 0,
    ) -> None:
        if latent_samples <= 0 or uncertainty_weight < 0:
            raise ValueError("latent_samples must be positive and uncertainty_weight >= 0")
        self.model, self.perception, self.cost, self.planner = model, perception, cost, planner
        self.latent_samples, self.terminated = latent_samples, terminated
        self.terminal_value, self.value_discount = terminal_value, value_discount
        self.proposal = proposal
        self.uncertainty_weight, self.uncertainty_masks = uncertainty_weight, uncertainty_masks
        self.seed = seed
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        self.action_dim = model.action_dim
        self.last: Decision | None = None
        self._plan: Tensor | None = None
        self.fallbacks = 0  #: decisions (since construction) that used the safe action

    def reset(self) -> None:
        """Forget the previous plan (a new episode starts)."""
        self._plan, self.last = None, None

    def objective(self, state: Tensor, z: Tensor) -> Callable[[Tensor], Tensor]:
        """Cost of candidate sequences from `state` [S] under latents z [T, K, Z].

        The returned callable maps actions [T', N, A] (T' <= T) to the mean cost [N] over the K
        samples.
        """
        samples = z.shape[1]

        def evaluate(actions: Tensor) -> Tensor:
            horizon, n = actions.shape[:2]
            acts = (
                actions.unsqueeze(1).expand(-1, samples, -1, -1).reshape(horizon, samples * n, -1)
            )
            zs = z[:horizon].unsqueeze(2).expand(-1, -1, n, -1).reshape(horizon, samples * n, -1)
            s0 = state.expand(samples * n, -1)
            states = self.model.rollout(s0, acts, zs)  # [T, K*N, S]
            previous = torch.cat([s0[None], states[:-1]])
            step_cost = self.cost(previous, acts, states)  # [T, K*N]
            if self.terminated is not None:
                # After a predicted termination nothing more is earned or paid.
                ended = self.terminated(states).to(step_cost.dtype)
                alive = alive_weights(1 - ended)
                step_cost = step_cost * alive
            total = step_cost.sum(0)
            if self.terminal_value is not None:
                end_alive = alive[-1] * (1 - ended[-1]) if self.terminated is not None else 1.0
                value = self.terminal_value(states[-1])
                total = total + self.value_discount * end_alive * value
            if self.uncertainty_weight > 0:
                spread = self.model.uncertainty(s0, acts, self.uncertainty_masks, zs)
                total = total + self.uncertainty_weight * spread.sum(0)
            return total.view(samples, n).mean(0)

        return evaluate

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The first action of the best plan from `obs` [S]; always finite and within [-1, 1]."""
        start = time.perf_counter()
        state = self.perception(obs)
        horizon = self.planner.horizon  # type: ignore[attr-defined]
        z = self.model.sample_prior(horizon, self.latent_samples, generator=self.generator)
        objective = self.objective(state, z)
        self.model.eval()
        with frozen(self.model):
            init = self._warm_start(objective, state, horizon)
            result = self.planner.plan(objective, init=init, generator=self.generator)
        plan = result.actions
        fallback = not (np.isfinite(result.cost) and torch.isfinite(plan).all())
        if fallback:
            plan = self._safe_plan(horizon)
            self.fallbacks += 1
            if self.fallbacks & (self.fallbacks - 1) == 0:  # 1st, 2nd, 4th, ...: no flood
                log.warning(
                    "MPC: non-finite plan (cost %s); used the %s instead (%d fallbacks so far)",
                    result.cost,
                    "shifted previous plan" if self._plan is not None else "zero action",
                    self.fallbacks,
                )
        with torch.no_grad():
            first = objective(plan[:1, None]).item() if not fallback else 0.0
        self._plan = shift_plan(plan)
        action = plan[0].clamp(-1.0, 1.0).detach().cpu().numpy().astype(np.float32)
        self.last = Decision(
            action=action,
            planned_cost=float(result.cost),
            planned_step_cost=first,
            seconds=time.perf_counter() - start,
            fallback=fallback,
        )
        return action

    def _warm_start(
        self, objective: Callable[[Tensor], Tensor], state: Tensor, horizon: int
    ) -> Tensor | None:
        """The shifted previous plan or the policy's proposal, whichever the objective prefers."""
        starts = [] if self._plan is None else [self._plan]
        if self.proposal is not None:
            starts.append(self.proposal(state, horizon).to(state.device))
        if len(starts) < 2:
            return starts[0] if starts else None
        with torch.no_grad():
            costs = objective(torch.stack(starts, dim=1))
        return starts[int(torch.nan_to_num(costs, nan=float("inf")).argmin())]

    def _safe_plan(self, horizon: int) -> Tensor:
        """The previous plan shifted, else zeros: used when planning produced non-finite values."""
        if self._plan is not None and torch.isfinite(self._plan).all():
            return self._plan
        return torch.zeros(horizon, self.action_dim, device=self.model.device)
