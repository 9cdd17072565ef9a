"""Model-predictive control: plan through the world model, execute the first action, shift, repeat.

The objective handed to the planner unrolls the forward model from the current state for each
candidate action sequence, with K latent samples z ~ N(0, I) drawn once per decision and shared by
all candidates (common random numbers: candidates are compared on the same futures, and a gradient
planner sees a fixed objective). Its gradient with respect to the actions is backpropagation
through time, i.e. the Kelley-Bryson adjoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from agents.planners import GradientPlanner, shift_plan
from agents.planners.graphed import GraphedSearch
from worldmodel.cost.risk import MEAN, Risk
from worldmodel.cost.trajectory import Trajectory, TrajectoryCost
from worldmodel.forward.layers import frozen
from worldmodel.forward.model import ForwardModel
from worldmodel.perception import Perception
from worldmodel.types import (
    BatchObjective,
    Decision,
    Generators,
    Objective,
    Planner,
    PlanResult,
)

log = logging.getLogger(__name__)

SINGLE = -1
"""The env key of `act` among `act_batch`'s warm starts."""

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
        latent_samples: int = 2,
        risk: Risk = MEAN,
        proposal: ActionProposal | None = None,
        seed: int = 0,
        cuda_graphs: bool = True,
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
        self._plans: dict[int, Tensor] = {}  # the shifted previous plan of each env
        self.last_batch: list[Decision] = []  #: act_batch's latest decision of each env
        self.fallbacks = 0  #: decisions (since construction) that used the safe action
        # On CUDA a gradient decision is replayed as one recorded graph (agents/planners/graphed)
        self._graphed = (
            GraphedSearch(planner, self._flat_objective)
            if cuda_graphs
            and isinstance(planner, GradientPlanner)
            and planner.device.type == "cuda"
            else None
        )

    @property
    def horizon(self) -> int:
        """Actions planned ahead."""
        return self.planner.horizon

    def generators(self) -> Generators:
        """The latent draws and restarts (`plan`) and the proposal's, where it has one."""
        proposal = getattr(self.proposal, "generator", None)
        return {"plan": self.generator} | ({"proposal": proposal} if proposal is not None else {})

    def reset(self) -> None:
        """Forget the previous plans (a new episode starts)."""
        self.last, self._plans, self.last_batch = None, {}, []

    def objective(self, state: Tensor, z: Tensor) -> Objective:
        """Cost of candidate sequences from `state` [S] under latents z [T, K, Z].

        The returned callable maps actions [T', N, A] (T' <= T) to the cost [N] over the K
        samples, combined by `risk` (their mean by default).
        """
        batch = self.batch_objective(state[None], z)
        return lambda actions: batch(actions[:, None])[0]

    def batch_objective(self, states: Tensor, z: Tensor) -> BatchObjective:
        """Cost of candidate sequences from each of E states [E, S] under latents z [T, K, Z]
        (the same K futures' latents for every env): actions [T', E, N, A] -> cost [E, N]."""
        samples = z.shape[1]

        def evaluate(actions: Tensor) -> Tensor:
            horizon, envs, n = actions.shape[:3]
            flat = actions.reshape(horizon, 1, envs * n, -1)  # env-major candidates
            acts = flat.expand(-1, samples, -1, -1).reshape(horizon, samples * envs * n, -1)
            zs = z[:horizon, :, None].expand(-1, -1, envs * n, -1).flatten(1, 2)
            # Broadcast views, not copies: with one env the start state is never materialised.
            s0 = states[None, :, None].expand(samples, envs, n, -1).reshape(-1, states.shape[-1])
            states_t = self.model.rollout(s0, acts, zs)  # [T', K*E*N, S]
            trajectory = Trajectory(torch.cat([s0[None], states_t]), acts, zs)
            costs = self.trajectory_cost(trajectory).total.view(samples, envs * n)
            return self.risk(costs).view(envs, n)

        return evaluate

    def _flat_objective(self, states: Tensor, z: Tensor) -> Objective:
        """`batch_objective` over env-major candidates [T, E * N, A] -> [E * N]."""
        batch, envs = self.batch_objective(states, z), len(states)

        def evaluate(actions: Tensor) -> Tensor:
            return batch(actions.view(actions.shape[0], envs, -1, actions.shape[-1])).flatten()

        return evaluate

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The first action of the best plan from `obs` [S]; always finite and within [-1, 1].

        One env of `act_batch` (the key `SINGLE` among its warm starts)."""
        action = self.act_batch(np.asarray(obs)[None], envs=[SINGLE])[0]
        self.last = self.last_batch[0]
        return action

    def act_batch(self, obs: np.ndarray, envs: list[int] | None = None) -> np.ndarray:
        """First actions [E, A] of the best plans from E envs' observations [E, S], planned in
        one call where the planner can (`plan_batch`), else env by env. Row i is env
        `envs[i]` (default: env i), which keeps its own warm start from one call to the next
        (`reset_envs` forgets it when its episode ends), so a call may plan for a subset of the
        envs. Always finite and within [-1, 1]; `last_batch` holds each row's decision."""
        start = time.perf_counter()
        states = torch.stack([self.perception(o) for o in obs])
        ids = list(range(len(states))) if envs is None else list(envs)
        horizon = self.planner.horizon
        if len(ids) != len(states) or len(set(ids)) != len(ids):
            raise ValueError(f"envs must name each of the {len(states)} rows once, got {envs}")
        previous = [self._plans.get(i) for i in ids]
        z = self.model.sample_prior(horizon, self.latent_samples, generator=self.generator)
        objective = self.batch_objective(states, z)
        self.model.eval()
        with frozen(self.model):
            init = torch.stack(
                [
                    self._warm_start(self.objective(states[e], z), states[e], horizon, plan)
                    if plan is not None or self.proposal is not None
                    # NaN: the planner's own default start (the middle of its box)
                    else torch.full((horizon, self.action_dim), math.nan, device=states.device)
                    for e, plan in enumerate(previous)
                ]
            )
            results = self._plan_batch(objective, states, z, init)
            plans = torch.stack([r.actions for r in results], dim=1)  # [T, E, A]
            with torch.no_grad():
                firsts = objective(plans[:1, :, None])[:, 0].tolist()
        actions, decisions = [], []
        seconds = (time.perf_counter() - start) / len(ids)
        for e, result in enumerate(results):
            plan = result.actions
            fallback = not (np.isfinite(result.cost) and torch.isfinite(plan).all())
            if fallback:
                plan = self._fall_back(horizon, previous[e], result.cost)
            self._plans[ids[e]] = shift_plan(plan)
            actions.append(plan[0].clamp(-1.0, 1.0).detach().cpu().numpy().astype(np.float32))
            first = 0.0 if fallback else firsts[e]
            decisions.append(Decision(actions[-1], float(result.cost), first, seconds, fallback))
        self.last_batch = decisions
        return np.stack(actions)

    def reset_envs(self, envs: list[int]) -> None:
        """Forget the plans of these envs of `act_batch` (their episodes ended)."""
        for e in envs:
            self._plans.pop(e, None)

    def _plan_batch(
        self, objective: BatchObjective, states: Tensor, z: Tensor, init: Tensor
    ) -> list[PlanResult]:
        """The recorded decision, else one `plan_batch` call where the planner has it, else
        `plan` for each env."""
        if self._graphed is not None:
            return self._graphed_plans(states, z, init)
        plan_batch = getattr(self.planner, "plan_batch", None)
        if plan_batch is not None:
            return plan_batch(objective, len(states), init=init, generator=self.generator)
        return [
            self.planner.plan(
                self.objective(state, z),
                init=None if torch.isnan(start).all() else start,
                generator=self.generator,
            )
            for state, start in zip(states, init, strict=True)
        ]

    def _graphed_plans(self, states: Tensor, z: Tensor, init: Tensor) -> list[PlanResult]:
        """Each env's best plan of the gradient planner's fixed-iteration search, replayed."""
        planner = self.planner
        assert isinstance(planner, GradientPlanner)
        starts = planner.batch_starts(len(states), init, self.generator)
        x, cost = self._graphed(states, z, starts)
        return planner.best_of_each(x, cost, len(states), planner.iterations)

    def _warm_start(
        self, objective: Objective, state: Tensor, horizon: int, plan: Tensor | None
    ) -> Tensor | None:
        """The shifted previous `plan` or the policy's proposal, whichever the objective
        prefers."""
        starts = [] if plan is None else [plan]
        if self.proposal is not None:
            starts.append(self.proposal(state, horizon).to(state.device))
        if len(starts) < 2:
            return starts[0] if starts else None
        with torch.no_grad():
            costs = objective(torch.stack(starts, dim=1))
        return starts[int(torch.nan_to_num(costs, nan=float("inf")).argmin())]

    def _fall_back(self, horizon: int, plan: Tensor | None, cost: float) -> Tensor:
        """The safe plan for a non-finite one, counted and logged (1st, 2nd, 4th, ...: no flood)."""
        self.fallbacks += 1
        if self.fallbacks & (self.fallbacks - 1) == 0:
            log.warning(
                "MPC: non-finite plan (cost %s); used the %s instead (%d fallbacks so far)",
                cost,
                "shifted previous plan" if plan is not None else "zero action",
                self.fallbacks,
            )
        return self._safe_plan(horizon, plan)

    def _safe_plan(self, horizon: int, plan: Tensor | None) -> Tensor:
        """The previous `plan` shifted, else zeros: used when planning produced non-finite
        values."""
        if plan is not None and torch.isfinite(plan).all():
            return plan
        return torch.zeros(horizon, self.action_dim, device=self.model.device)
