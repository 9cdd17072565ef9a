"""The intrinsic cost a run plans, learns and dreams with: the task's exact one, or a learned one.

Planner, policy, critic, evaluation and the learned simulator all take an `IntrinsicCost`, so
they do not know (or care) whether its parts are a torch formula of the env's reward or the
`LearnedCost` fit to the rewards beside the world model.
"""

from __future__ import annotations

from dataclasses import dataclass

from worldmodel.cost.learned import LearnedCost
from worldmodel.types import CostFn, TerminationFn


@dataclass(frozen=True)
class IntrinsicCost:
    """c(s, a, s'), its planning surrogate and the termination; each batched over leading dims
    (`CostFn`, `TerminationFn`), taking normalised actions in [-1, 1]."""

    cost: CostFn
    """Minus the reward of a transition: what evaluation and the simulator pay."""
    planning_cost: CostFn
    """What planner and policy minimise: a smooth surrogate of `cost`, or `cost` itself."""
    terminated: TerminationFn | None
    """Whether a predicted next state ends the episode; None: the task never ends early."""
    learned: LearnedCost | None = None
    """The module behind `cost` where it is learned (None: the cost is exact)."""

    @classmethod
    def of_learned(
        cls, learned: LearnedCost, terminated: TerminationFn | None = None
    ) -> IntrinsicCost:
        """The learned cost (its own planning cost: it is smooth), with `terminated` where an
        exact termination is known, else the learned one (None without a classifier)."""
        return cls(learned, learned, terminated or learned.terminated, learned)
