"""Planning for several envs at once: `GradientPlanner.plan_batch` on problems with known optima.

E independent quadratics, problem e with its own target: the batch must give each problem its own
optimum, exactly what `plan` gives it alone when both run the same iterations.
"""

from __future__ import annotations

import pytest
import torch
from planner_problems import gen
from torch import Tensor

from agents.planners import GradientPlanner

T, A = 6, 2


def targets(envs: int) -> Tensor:
    """[E, T, A] optima inside the box, a different one per problem."""
    return torch.rand(envs, T, A, generator=gen(7)) * 1.2 - 0.6


def batch_quadratic(target: Tensor):
    """actions [T, E, N, A] -> [E, N]: problem e's squared distance to its target."""

    def objective(actions: Tensor) -> Tensor:
        return (actions - target.transpose(0, 1)[:, :, None]).square().sum((0, 3))

    return objective


def single_quadratic(target: Tensor):
    """actions [T, N, A] -> [N]: the distance to one target [T, A]."""
    return lambda actions: (actions - target[:, None]).square().sum((0, 2))


def planner(**kwargs) -> GradientPlanner:
    return GradientPlanner(T, -1.0, 1.0, A, **{"iterations": 40, "lr": 0.1} | kwargs)


def test_each_problem_reaches_its_own_optimum() -> None:
    target = targets(5)
    results = planner(iterations=200, candidates=3).plan_batch(
        batch_quadratic(target), 5, generator=gen(0)
    )
    assert len(results) == 5
    for result, optimum in zip(results, target, strict=True):
        torch.testing.assert_close(result.actions, optimum, atol=1e-3, rtol=0)
        assert result.cost == pytest.approx(0.0, abs=1e-5)


def test_without_restarts_a_batch_is_exactly_each_problem_planned_alone() -> None:
    """One candidate per problem and no early stop: Adam is elementwise and the clipping per
    candidate, so a problem's iterates do not depend on the others'."""
    target, init = targets(4), torch.rand(4, T, A, generator=gen(1)) * 2 - 1
    fixed = planner(candidates=1, patience=10_000, max_grad_norm=0.5)
    batch = fixed.plan_batch(batch_quadratic(target), 4, init=init)
    for e, result in enumerate(batch):
        alone = fixed.plan(single_quadratic(target[e]), init=init[e])
        torch.testing.assert_close(result.actions, alone.actions, rtol=0, atol=0)
        assert result.cost == pytest.approx(alone.cost, rel=1e-6)
        assert result.iterations == alone.iterations == 40


def test_the_warm_start_is_each_problems_first_candidate() -> None:
    """Started at its optimum, a problem keeps it (cost 0 at iteration 0), whatever the restarts
    and whichever problem it is."""
    target = targets(3)
    init = torch.zeros(3, T, A)
    init[1] = target[1]
    results = planner(iterations=0, candidates=4).plan_batch(
        batch_quadratic(target), 3, init=init, generator=gen(2)
    )
    torch.testing.assert_close(results[1].actions, target[1], rtol=0, atol=0)
    assert results[1].cost == 0.0
    assert results[0].cost > 0.0 and results[2].cost > 0.0


def test_a_problem_still_improving_keeps_the_batch_running() -> None:
    """Problem 0 starts at its optimum, problem 1 far away: the batch runs until 1 converges."""
    target = targets(2)
    init = torch.stack([target[0], -target[1]])
    results = planner(iterations=500, candidates=1, patience=20, tol=1e-3).plan_batch(
        batch_quadratic(target), 2, init=init
    )
    assert results[0].iterations == results[1].iterations > 20
    assert results[1].cost < 1e-3


def test_bad_batch_arguments_are_refused() -> None:
    objective = batch_quadratic(targets(2))
    with pytest.raises(ValueError, match="envs must be >= 1"):
        planner().plan_batch(objective, 0)
    with pytest.raises(ValueError, match=r"init must be \[E=2, T, A\]"):
        planner().plan_batch(objective, 2, init=torch.zeros(3, T, A))
