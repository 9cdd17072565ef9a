"""CEM-GD style hybrid: global search by sampling, local refinement by gradient."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Generator, Tensor

from agents.planners.base import Objective, PlanResult, PopulationPlanner
from agents.planners.gradient import GradientPlanner


class HybridPlanner:
    """Run a sampling planner, then refine its ``top_k`` sequences with a gradient planner.

    Sampling finds the right basin on multi-modal objectives but converges slowly inside it;
    Adam converges fast but only locally. The refiner keeps, per sequence, the best iterate it
    visited (the start included), so the result is never worse than the sampler's best.

    Args:
        sampler: a ``PopulationPlanner`` (``CEMPlanner``, ``MPPIPlanner``) for the global stage.
        refiner: the ``GradientPlanner`` used on the top sequences; ``None`` builds one with the
            sampler's horizon, bounds, device and dtype and default hyper-parameters.
        top_k: number of sampler sequences refined.
    """

    def __init__(
        self, sampler: PopulationPlanner, refiner: GradientPlanner | None = None, *, top_k: int = 4
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if refiner is None:
            low = sampler.action_low
            refiner = GradientPlanner(
                sampler.horizon, low, sampler.action_high, device=low.device, dtype=low.dtype
            )
        elif refiner.horizon != sampler.horizon or not all(
            torch.allclose(r.detach().cpu().double(), s.detach().cpu().double())
            for r, s in (
                (refiner.action_low, sampler.action_low),
                (refiner.action_high, sampler.action_high),
            )
        ):
            raise ValueError("sampler and refiner must share horizon and action bounds")
        self.sampler = sampler
        self.refiner = refiner
        self.top_k = top_k

    @property
    def horizon(self) -> int:
        """Number of actions ``T`` in a plan (the sampler's)."""
        return self.sampler.horizon

    @property
    def action_low(self) -> Tensor:
        """``[A]`` lower action bounds (the sampler's)."""
        return self.sampler.action_low

    @property
    def action_high(self) -> Tensor:
        """``[A]`` upper action bounds (the sampler's)."""
        return self.sampler.action_high

    def plan(
        self, objective: Objective, init: Tensor | None = None, generator: Generator | None = None
    ) -> PlanResult:
        """Sample, refine the best ``top_k``, return the overall best; see ``Planner.plan``.

        ``iterations`` is the sum of the sampler's and the refiner's iterations.
        """
        coarse = self.sampler.plan_population(objective, self.top_k, init, generator)
        fine = self.refiner.optimize(objective, coarse.actions)
        best = fine if fine.costs[0] <= coarse.costs[0] else coarse
        return replace(best.best(), iterations=coarse.iterations + fine.iterations)
