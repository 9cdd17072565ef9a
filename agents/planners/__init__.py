"""Trajectory optimisers over plain callables ``actions [T, N, A] -> cost [N]``.

They know nothing about models, which lets them be tested on problems with known optima (LQR).
"""

from agents.planners.base import Population, PopulationPlanner, shift_plan
from agents.planners.gradient import GradientPlanner, objective_gradient
from agents.planners.hybrid import HybridPlanner
from agents.planners.registry import PLANNERS, PlannerSettings, make_planner, register_planner
from agents.planners.sampling import CEMPlanner, MPPIPlanner, colored_noise
from worldmodel.types import Objective, Planner, PlanResult

__all__ = [
    "PLANNERS",
    "CEMPlanner",
    "GradientPlanner",
    "HybridPlanner",
    "MPPIPlanner",
    "Objective",
    "PlanResult",
    "Planner",
    "PlannerSettings",
    "Population",
    "PopulationPlanner",
    "colored_noise",
    "make_planner",
    "objective_gradient",
    "register_planner",
    "shift_plan",
]
