"""Trajectory optimisers over plain callables ``actions [T, N, A] -> cost [N]``.

They know nothing about models, which lets them be tested on problems with known optima (LQR).
"""

from agents.planners.base import (
    Objective,
    Planner,
    PlanResult,
    Population,
    PopulationPlanner,
    shift_plan,
)
from agents.planners.gradient import GradientPlanner, objective_gradient
from agents.planners.hybrid import HybridPlanner
from agents.planners.sampling import CEMPlanner, MPPIPlanner, colored_noise

__all__ = [
    "CEMPlanner",
    "GradientPlanner",
    "HybridPlanner",
    "MPPIPlanner",
    "Objective",
    "PlanResult",
    "Planner",
    "Population",
    "PopulationPlanner",
    "colored_noise",
    "objective_gradient",
    "shift_plan",
]
