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

import numpy as np
import torch
from torch import Tensor

from agents.planners import shift_plan
from worldmodel.cost.risk import MEAN, Risk
from worldmodel.cost.trajectory import Trajectory, TrajectoryCost
from worldmodel.forward.layers import frozen
from worldmodel.forward.model import ForwardModel
from worldmodel.perception import Perception
from worldmodel.types import Decision, Generators, Objective, Planner

log = logging.getLogger(__name__)

ActionProposal = Callable[[Tensor, int], Tensor]
"""Policy hook: state [S], horizon T -> a proposed action sequence [T, A] to warm-start from."""


class MPCAgent:
    """`act(obs) -> action` by planning through `model`; `reset()` between episodes.

    `trajectory_cost` scores the imagined futures (the task's cost, termination, terminal value
    and uncertainty penalty: `TrajectoryCost`); `risk` combines the costs of a sequence's
    `latent_samples` futures into one.
    """

    def __init__(
        self,
        model: ForwardModel,
        perception: Perception,
        trajectory_cost: TrajectoryCost,
        planner: Planner,
        *,
        latent_samples: int = 5,
        risk: Risk = MEAN,
        proposal: ActionProposal | None = None,
        seed: int = 0,
    ) -> None:
        if latent_samples <= 0:
            raise ValueError(f"latent_samples must be positive, got {latent_samples}")
        self.model, self.perception, self.planner = model, perception, planner
        self.trajectory_cost = trajectory_cost
        self.latent_samples, self.proposal, self.seed = latent_samples, proposal, seed
        self.risk = risk
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        self.action_dim = model.action_dim
        self.last: Decision | None = None
        self._plan: Tensor | None = None
        self.fallbacks = 0  #: decisions (since construction) that used the safe action

    @property
    def horizon(self) -> int:
        """Actions planned ahead."""
        return self.planner.horizon

    def generators(self) -> Generators:
        """The latent draws and restarts (`plan`) and the proposal's, where it has one."""
        proposal = getattr(self.proposal, "generator", None)
        return {"plan": self.generator} | ({"proposal": proposal} if proposal is not None else {})

    def reset(self) -> None:
        """Forget the previous plan (a new episode starts)."""
        self._plan, self.last = None, None

    def objective(self, state: Tensor, z: Tensor) -> Objective:
        """Cost of candidate sequences from `state` [S] under latents z [T, K, Z].

        The returned callable maps actions [T', N, A] (T' <= T) to the cost [N] over the K
        samples, combined by `risk` (their mean by default).
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
            trajectory = Trajectory(torch.cat([s0[None], states]), acts, zs)
            return self.risk(self.trajectory_cost(trajectory).total.view(samples, n))

        return evaluate

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The first action of the best plan from `obs` [S]; always finite and within [-1, 1]."""
        start = time.perf_counter()
        state = self.perception(obs)
        horizon = self.planner.horizon
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

    def _warm_start(self, objective: Objective, state: Tensor, horizon: int) -> Tensor | None:
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
