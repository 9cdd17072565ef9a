"""Planners by name: `make_planner("cem", ...)` builds the one asked for and nothing else.

A builder takes the plan's shape (horizon, action_dim, device) and the settings every planner
kind may read; each picks the ones it uses. `register_planner` adds a kind (a user's own planner
becomes `--planner.kind NAME`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from agents.planners.gradient import GradientPlanner
from agents.planners.hybrid import HybridPlanner
from agents.planners.sampling import CEMPlanner, MPPIPlanner
from worldmodel.types import Planner


@dataclass(frozen=True)
class PlannerSettings:
    """What a planner of any kind may be built from, over the normalised action box [-1, 1]."""

    horizon: int  #: actions planned ahead
    action_dim: int  #: A
    device: torch.device  #: where the planner's tensors live
    iterations: int = 3  #: optimiser iterations (Adam steps, or CEM/MPPI rounds)
    candidates: int = 3  #: gradient: sequences optimised; hybrid: CEM sequences refined
    lr: float = 0.1  #: gradient: Adam step size
    population: int = 200  #: CEM/MPPI: sequences sampled per round
    elites: int = 20  #: CEM: sequences the sampling distribution is refitted to
    temperature: float = 1.0  #: MPPI: temperature of the exponential weights


PlannerBuilder = Callable[[PlannerSettings], Planner]
PLANNERS: dict[str, PlannerBuilder] = {}


def register_planner(name: str) -> Callable[[PlannerBuilder], PlannerBuilder]:
    """Decorator: make `builder(settings) -> Planner` available as planner kind `name`."""

    def register(builder: PlannerBuilder) -> PlannerBuilder:
        PLANNERS[name] = builder
        return builder

    return register


def make_planner(kind: str, settings: PlannerSettings) -> Planner:
    """The planner of `kind` built from `settings`; an unknown kind is a `ValueError`."""
    if kind not in PLANNERS:
        raise ValueError(f"unknown planner kind {kind!r}; choose one of {', '.join(PLANNERS)}")
    return PLANNERS[kind](settings)


def _box(s: PlannerSettings) -> dict:
    return dict(
        horizon=s.horizon,
        action_low=-1.0,
        action_high=1.0,
        action_dim=s.action_dim,
        device=s.device,
    )


@register_planner("gradient")
def _gradient(s: PlannerSettings) -> GradientPlanner:
    return GradientPlanner(**_box(s), iterations=s.iterations, candidates=s.candidates, lr=s.lr)


@register_planner("cem")
def _cem(s: PlannerSettings) -> CEMPlanner:
    return CEMPlanner(**_box(s), iterations=s.iterations, population=s.population, elites=s.elites)


@register_planner("mppi")
def _mppi(s: PlannerSettings) -> MPPIPlanner:
    return MPPIPlanner(
        **_box(s), iterations=s.iterations, samples=s.population, temperature=s.temperature
    )


@register_planner("hybrid")
def _hybrid(s: PlannerSettings) -> HybridPlanner:
    return HybridPlanner(_cem(s), _gradient(s), top_k=s.candidates)
