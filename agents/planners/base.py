"""Shared types and helpers for trajectory optimisers over plain callables.

The planners here know nothing about models: they minimise an ``Objective`` that maps a batch of
``N`` candidate action sequences, time-major ``[T, N, A]``, to one cost per candidate ``[N]``.
A model-based controller builds that callable (unroll the model, sum the costs); the planners can
therefore be tested against problems with known optima.

Non-finite costs (NaN, +inf, -inf) are treated as +inf: such a candidate is never selected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Generator, Tensor

from worldmodel.types import Objective, PlanResult


@dataclass(frozen=True)
class Population:
    """The best distinct candidates a planner evaluated, sorted by increasing cost.

    Attributes:
        actions: ``[T, K, A]`` candidate sequences, inside the action bounds.
        costs: ``[K]`` their objective values, ascending (non-finite costs are ``inf``).
        iterations: optimiser iterations run to produce them.
    """

    actions: Tensor
    costs: Tensor
    iterations: int

    def best(self) -> PlanResult:
        """The lowest-cost candidate as a ``PlanResult``."""
        return PlanResult(self.actions[:, 0].contiguous(), float(self.costs[0]), self.iterations)


def shift_plan(actions: Tensor, fill: Tensor | None = None) -> Tensor:
    """Warm start for the next control step: drop the first action and append one at the end.

    Args:
        actions: ``[T, A]`` previous plan.
        fill: ``[A]`` action appended at the end; ``None`` repeats the last action.

    Returns:
        ``[T, A]`` shifted plan.
    """
    last = actions[-1] if fill is None else fill.to(actions)
    return torch.cat([actions[1:], last.expand(1, actions.shape[-1])], dim=0)


class BoundedPlanner:
    """A planner over a box of actions: constructor logic (horizon, box bounds, device, dtype),
    and `plan_population`, the `k` best candidates of a search (what `HybridPlanner` refines).

    Args:
        horizon: number of actions ``T`` in a plan.
        action_low: ``[A]`` lower bounds, or a float broadcast to ``action_dim``.
        action_high: ``[A]`` upper bounds, or a float broadcast to ``action_dim``.
        action_dim: ``A``; required only when both bounds are floats.
        device: where every tensor the planner creates lives.
        dtype: floating dtype of actions and costs.
    """

    def __init__(
        self,
        horizon: int,
        action_low: Tensor | float,
        action_high: Tensor | float,
        action_dim: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon = horizon
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.dtype = dtype
        if action_dim is None:
            dims = [b.numel() for b in (action_low, action_high) if isinstance(b, Tensor)]
            if not dims:
                raise ValueError("action_dim is required when both bounds are floats")
            action_dim = dims[0]
        self.action_dim = action_dim
        low, high = (
            torch.as_tensor(b, dtype=dtype).to(self.device).reshape(-1).expand(action_dim).clone()
            for b in (action_low, action_high)
        )
        # Random restarts draw uniformly from the box, so it must be finite.
        if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (low <= high).all()):
            raise ValueError("action bounds must be finite with action_low <= action_high")
        self.action_low = low
        self.action_high = high

    def plan(
        self, objective: Objective, init: Tensor | None = None, generator: Generator | None = None
    ) -> PlanResult:
        """The best of ``plan_population``; see ``Planner.plan``."""
        return self.plan_population(objective, 1, init, generator).best()

    def plan_population(
        self,
        objective: Objective,
        k: int,
        init: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Population:
        """The ``k`` best distinct candidates found from the warm start ``init`` (``None``: the
        middle of the box), sorted by cost; see ``PopulationPlanner``."""
        return self._search(objective, k, self._initial(init), generator)

    def _search(
        self, objective: Objective, k: int, start: Tensor, generator: Generator | None
    ) -> Population:
        """The search itself, from the start sequence ``[T, A]`` (inside the box)."""
        raise NotImplementedError

    @property
    def _shape(self) -> tuple[int, int]:
        return (self.horizon, self.action_dim)

    def _clip(self, actions: Tensor) -> Tensor:
        """Project ``[..., A]`` actions onto the box."""
        return torch.clamp(actions, self.action_low, self.action_high)

    def _initial(self, init: Tensor | None) -> Tensor:
        """``[T, A]`` starting sequence: the warm start projected onto the box, else its centre."""
        mid = (0.5 * (self.action_low + self.action_high)).expand(self._shape)
        if init is None:
            return mid.clone()
        init = init.to(device=self.device, dtype=self.dtype)
        if init.shape != self._shape:
            raise ValueError(f"init must have shape {self._shape}, got {tuple(init.shape)}")
        return self._clip(torch.where(torch.isfinite(init), init, mid))

    def _evaluate(self, objective: Objective, actions: Tensor) -> Tensor:
        """Cost ``[N]`` of ``[T, N, A]`` actions, with non-finite values replaced by ``inf``."""
        cost = objective(actions)
        if cost.shape != actions.shape[1:2]:
            raise ValueError(
                f"objective must return shape [N]={tuple(actions.shape[1:2])}, "
                f"got {tuple(cost.shape)}"
            )
        return sanitize_cost(cost.to(self.dtype))

    def _uniform(self, n: int, generator: Generator | None) -> Tensor:
        """``[T, n, A]`` sequences drawn uniformly from the box."""
        u = rand((self.horizon, n, self.action_dim), generator, self.device, self.dtype)
        return self.action_low + u * (self.action_high - self.action_low)


def sanitize_cost(cost: Tensor) -> Tensor:
    """Replace NaN and +-inf costs by +inf so that they are never selected."""
    return torch.where(torch.isfinite(cost), cost, math.inf)


def rand(
    shape: tuple[int, ...], generator: Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Uniform ``[0, 1)`` samples drawn with ``generator`` and placed on ``device``."""
    return _draw(torch.rand, shape, generator, device, dtype)


def randn(
    shape: tuple[int, ...], generator: Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Standard normal samples drawn with ``generator`` and placed on ``device``."""
    return _draw(torch.randn, shape, generator, device, dtype)


def _draw(
    sampler: Callable[..., Tensor],
    shape: tuple[int, ...],
    generator: Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    # A generator only fills tensors on its own device; drawing there and moving keeps a CPU
    # generator usable (and reproducible) for a planner that lives on an accelerator.
    gen_device = device if generator is None else generator.device
    return sampler(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def merge_top_k(
    best: tuple[Tensor, Tensor] | None, actions: Tensor, costs: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Keep the ``k`` lowest-cost sequences among an archive and a new batch.

    Args:
        best: archive ``(actions [T, K, A], costs [K])`` or ``None``.
        actions: ``[T, M, A]`` newly evaluated sequences.
        costs: ``[M]`` their sanitised costs.
        k: archive size.

    Returns:
        ``(actions [T, k', A], costs [k'])`` sorted ascending, ``k' = min(k, K + M)``.
    """
    if best is not None:
        actions = torch.cat([best[0], actions], dim=1)
        costs = torch.cat([best[1], costs], dim=0)
    top = torch.topk(costs, min(k, costs.numel()), largest=False, sorted=True)
    return actions[:, top.indices], top.values


PopulationPlanner = BoundedPlanner
"""The planners that can hand back their ``k`` best candidates (``HybridPlanner``'s samplers)."""
