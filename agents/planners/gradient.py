"""Gradient-based trajectory optimisation: Adam on the action sequence.

When the objective unrolls a differentiable model, backpropagating through it is
backpropagation through time, i.e. the Kelley-Bryson adjoint recursion of optimal control
(``tests/agents/planners/test_planners.py`` checks the two agree).
"""

from __future__ import annotations

import math

import torch
from torch import Generator, Tensor

from agents.planners.base import (
    BoundedPlanner,
    Objective,
    Population,
    sanitize_cost,
)
from worldmodel.types import BatchObjective, PlanResult


def objective_gradient(objective: Objective, actions: Tensor) -> tuple[Tensor, Tensor]:
    """Cost and gradient of every candidate, in one backward pass.

    The per-candidate costs are summed before the backward pass: candidates do not interact in
    the objective, so ``d(sum_n cost_n)/d actions[:, n]`` is exactly ``d cost_n / d actions[:, n]``,
    and a NaN in one candidate cannot leak into another (the sum's gradient is all ones whatever
    the values).

    Args:
        objective: actions ``[T, N, A]`` -> cost ``[N]``.
        actions: ``[T, N, A]`` point at which to differentiate.

    Returns:
        ``(cost [N], grad [T, N, A])``, both detached and unsanitised. Actions the objective does
        not depend on get a zero gradient.
    """
    with torch.enable_grad():
        x = actions.detach().requires_grad_(True)
        cost = objective(x)
        if not cost.requires_grad:
            return cost.detach(), torch.zeros_like(x)
        (grad,) = torch.autograd.grad(cost.sum(), x, allow_unused=True)
    return cost.detach(), torch.zeros_like(x) if grad is None else grad


class GradientPlanner(BoundedPlanner):
    """Adam on ``N`` parallel action sequences: the warm start plus ``N - 1`` random restarts.

    Bounds are enforced by projection (clamp after every Adam step) rather than by a squashing
    parameterisation ``a = tanh(z)``: at a saturated bound tanh's derivative vanishes, so a
    sequence that should sit on (or leave) the bound gets almost no gradient, and the squashing
    also warps the cost landscape (an LQR problem stops being quadratic in ``z``). Projection
    reaches bound-active optima exactly and keeps interior problems untouched.

    Args (besides the shape and box of ``BoundedPlanner``):
        iterations: maximum number of Adam steps.
        candidates: ``N`` sequences optimised in parallel; the best one is returned.
        lr: Adam step size, in action units.
        lr_decay: multiplicative learning-rate decay per step (``1.0`` = constant); a decaying
            step lets Adam settle into a minimum instead of hovering at a distance ~``lr``.
        max_grad_norm: each candidate's ``[T, A]`` gradient is rescaled to at most this norm,
            so that a one-off spike (a model blowing up) does not dominate Adam's moment
            estimates; ``None`` disables clipping.
        patience: window, in steps, of the early-stopping test. Adam with momentum 0.9 can
            overshoot and take ~15 steps to beat its best again, so shorter windows stop early
            on progress that is merely oscillating.
        tol: stop once the best cost improved by less than ``tol`` (relative) over ``patience``
            steps.
    """

    def __init__(
        self,
        horizon: int,
        action_low: Tensor | float,
        action_high: Tensor | float,
        action_dim: int | None = None,
        *,
        iterations: int = 100,
        candidates: int = 8,
        lr: float = 0.05,
        lr_decay: float = 1.0,
        max_grad_norm: float | None = 10.0,
        patience: int = 20,
        tol: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(horizon, action_low, action_high, action_dim, device, dtype)
        if iterations < 0 or candidates < 1 or patience < 1:
            raise ValueError("need iterations >= 0, candidates >= 1 and patience >= 1")
        self.iterations = iterations
        self.candidates = candidates
        self.lr = lr
        self.lr_decay = lr_decay
        self.max_grad_norm = max_grad_norm
        self.patience = patience
        self.tol = tol

    def _search(
        self, objective: Objective, k: int, start: Tensor, generator: Generator | None
    ) -> Population:
        """The ``k`` best of the ``candidates`` optimised sequences."""
        starts = torch.cat(
            [start.unsqueeze(1), self._uniform(self.candidates - 1, generator)],
            dim=1,
        )
        pop = self.optimize(objective, starts)
        return Population(pop.actions[:, :k], pop.costs[:k], pop.iterations)

    def plan_batch(
        self,
        objective: BatchObjective,
        envs: int,
        init: Tensor | None = None,
        generator: Generator | None = None,
    ) -> list[PlanResult]:
        """Plan for `envs` independent problems at once: one Adam run over all their candidates.

        Args:
            objective: actions ``[T, E, N, A]`` -> cost ``[E, N]`` (problem e's N candidates).
            envs: ``E``.
            init: ``[E, T, A]`` warm starts (``None``: the middle of the box for every problem).
            generator: source of the random restarts.

        Returns:
            Problem e's best sequence, its cost and the iterations run, for each e. Candidates do
            not interact (Adam is elementwise, clipping per candidate), so each problem gets what
            `plan` would give it, except that the run stops only once no problem improves: a
            problem may get more iterations than alone, never fewer.
        """
        starts = self.batch_starts(envs, init, generator)
        shape = (self.horizon, envs, self.candidates, self.action_dim)

        def flat(actions: Tensor) -> Tensor:
            return objective(actions.view(actions.shape[0], *shape[1:])).reshape(-1)

        x, cost, steps = self._optimize(flat, starts, groups=envs)
        return self.best_of_each(x, cost, envs, steps)

    def batch_starts(
        self, envs: int, init: Tensor | None = None, generator: Generator | None = None
    ) -> Tensor:
        """The start sequences of `plan_batch` ``[T, E * N, A]``, problem-major: each problem's
        warm start (``init`` ``[E, T, A]``, NaN rows or None: the middle of the box), then its
        N - 1 uniform restarts."""
        if envs < 1:
            raise ValueError(f"envs must be >= 1, got {envs}")
        if init is None:
            first = self._initial(None).unsqueeze(1).expand(-1, envs, -1)
        else:
            if init.shape[:1] != (envs,):
                raise ValueError(f"init must be [E={envs}, T, A], got {tuple(init.shape)}")
            first = torch.stack([self._initial(start) for start in init], dim=1)  # [T, E, A]
        restarts = self._uniform(envs * (self.candidates - 1), generator)
        return torch.cat(
            [first.unsqueeze(2), restarts.view(self.horizon, envs, -1, self.action_dim)], dim=2
        ).flatten(1, 2)

    def best_of_each(self, x: Tensor, cost: Tensor, envs: int, steps: int) -> list[PlanResult]:
        """Each problem's best of its candidates: ``x`` ``[T, E * N, A]``, ``cost`` ``[E * N]``
        (problem-major, as `batch_starts` orders them)."""
        x, cost = x.view(self.horizon, envs, -1, self.action_dim), cost.view(envs, -1)
        best = cost.argmin(1).tolist()
        return [
            PlanResult(x[:, e, i].contiguous(), float(cost[e, i]), steps)
            for e, i in enumerate(best)
        ]

    def optimize(self, objective: Objective, starts: Tensor) -> Population:
        """Run Adam from given start sequences (deterministic, no randomness).

        Args:
            objective: actions ``[T, N, A]`` -> cost ``[N]``.
            starts: ``[T, N, A]`` initial sequences; projected onto the box first.

        Returns:
            For each candidate, the best iterate it visited (the start included), sorted by cost.
        """
        best_x, best_cost, steps = self._optimize(objective, starts, groups=1)
        order = torch.argsort(best_cost, stable=True)
        return Population(best_x[:, order], best_cost[order], steps)

    def _optimize(
        self, objective: Objective, starts: Tensor, groups: int
    ) -> tuple[Tensor, Tensor, int]:
        """Adam from starts ``[T, N, A]`` whose candidates form `groups` equal problem-major
        groups; stops when no group's best improved over `patience` steps. Returns each
        candidate's best iterate ``[T, N, A]``, its cost ``[N]`` and the steps run."""
        if starts.dim() != 3 or starts.shape[0::2] != self._shape:
            raise ValueError(
                f"starts must be [T={self.horizon}, N, A={self.action_dim}], "
                f"got {tuple(starts.shape)}"
            )
        x = self._clip(starts.to(device=self.device, dtype=self.dtype)).detach().clone()
        x = torch.where(torch.isfinite(x), x, 0.5 * (self.action_low + self.action_high))
        x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.lr)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.lr_decay)
        best_x = x.detach().clone()
        best_cost = torch.full(x.shape[1:2], math.inf, device=self.device, dtype=self.dtype)
        history: list[list[float]] = []
        steps = 0
        while True:
            last = steps == self.iterations
            # The final iterate needs only its cost: skipping its backward pass saves a sixth
            # of a default decision.
            if last:
                with torch.no_grad():
                    cost, grad = objective(x.detach()), None
            else:
                cost, grad = objective_gradient(objective, x)
            if cost.shape != x.shape[1:2]:
                raise ValueError(f"objective must return shape [N], got {tuple(cost.shape)}")
            cost = sanitize_cost(cost.to(self.dtype))
            improved = cost < best_cost
            best_cost = torch.where(improved, cost, best_cost)
            best_x = torch.where(improved[:, None], x.detach(), best_x)
            history.append(best_cost.view(groups, -1).amin(1).tolist())
            if grad is None or self._converged(history):
                break
            x.grad = self._condition(grad)
            opt.step()
            sched.step()
            with torch.no_grad():
                # Adam can overflow to NaN on pathological gradients; clamp alone keeps NaN.
                x.copy_(self._clip(torch.nan_to_num(x, nan=0.0)))
            steps += 1
        return best_x, best_cost, steps

    def _condition(self, grad: Tensor) -> Tensor:
        """Zero non-finite gradient entries and clip each candidate's ``[T, A]`` norm."""
        grad = torch.where(torch.isfinite(grad), grad, 0.0)
        if self.max_grad_norm is None:
            return grad
        # Normalise by the largest entry first so that the norm of huge gradients cannot overflow.
        peak = grad.abs().amax(dim=(0, 2), keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
        norm = torch.linalg.vector_norm(grad / peak, dim=(0, 2), keepdim=True)
        return grad * torch.clamp(self.max_grad_norm / peak / norm, max=1.0)

    def _converged(self, history: list[list[float]]) -> bool:
        """No group's best cost improved by `tol` (relative) over the last `patience` steps."""
        if len(history) <= self.patience:
            return False
        for before, now in zip(history[-1 - self.patience], history[-1], strict=True):
            # inf - inf is NaN: a group whose every candidate is non-finite cannot improve.
            if (before - now) / max(abs(before), 1e-12) >= self.tol:
                return False
        return True
