"""How the costs of sampled futures make one cost: their mean, or the mean of the worst ones.

A plan is scored on K futures sampled from the world model (z from the prior). The mean is the
expected cost; CVaR_alpha, the mean of the worst alpha share, is a risk-averse planner's choice,
which pays for a plan that is cheap on average but disastrous in a few futures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

RISKS = ("mean", "cvar")


@dataclass(frozen=True)
class Risk:
    """Aggregate sampled costs [K, N] into one per candidate [N]."""

    kind: str = "mean"  #: "mean" (expected cost) or "cvar" (mean of the worst `alpha` share)
    alpha: float = 0.2  #: share of the worst samples CVaR averages (rounded up to >= 1 sample)

    def __post_init__(self) -> None:
        if self.kind not in RISKS:
            raise ValueError(f"risk must be one of {RISKS}, got {self.kind!r}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"the CVaR share alpha must be in (0, 1], got {self.alpha}")

    def __call__(self, costs: Tensor) -> Tensor:
        """costs [K, N] (K sampled futures of N candidates) -> [N]."""
        if self.kind == "mean":
            return costs.mean(0)
        # alpha K rounded up, but 0.28 * 25 = 7.000000000000001 is 7 samples, not 8
        worst = max(1, math.ceil(self.alpha * costs.shape[0] - 1e-9))
        return costs.topk(worst, dim=0).values.mean(0)


MEAN = Risk()
"""The expected cost: what a risk-neutral planner minimises."""
