"""Planners on pathological objectives (bounds, NaN, overflow), determinism, warm starts,
early stopping and their building blocks."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from planner_problems import BOUND, PLANNER_KINDS, gen, lqr_cost, lqr_problem, make_planner
from torch import Tensor

from agents.planners import (
    CEMPlanner,
    GradientPlanner,
    HybridPlanner,
    MPPIPlanner,
    Planner,
    PopulationPlanner,
    colored_noise,
    shift_plan,
)

# --------------------------------------------------------------------------------------------
# Robustness: every planner returns finite actions inside the bounds, whatever the objective.

OBJECTIVE_KINDS = ["huge_quadratic", "nan_half", "all_nan", "neg_inf", "inf_gradient", "overflow"]


def make_objective(
    kind: str, target: Tensor, low: Tensor, high: Tensor
) -> Callable[[Tensor], Tensor]:
    mid = 0.5 * (low + high)

    def objective(a: Tensor) -> Tensor:
        err = ((a - target) ** 2).sum(dim=(0, 2))
        if kind == "huge_quadratic":
            return 1e30 * err
        if kind == "nan_half":
            return torch.where(a[0, :, 0] > mid[0], math.nan, err)
        if kind == "all_nan":
            return err * math.nan
        if kind == "neg_inf":
            return torch.where(a[-1, :, -1] < mid[-1], -math.inf, err)
        if kind == "inf_gradient":  # minimised at the lower bound, where sqrt' is infinite
            return torch.sqrt((a - low).clamp_min(0.0)).sum(dim=(0, 2))
        return torch.exp(err)  # overflows to inf, with inf and NaN gradients

    return objective


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    planner_kind=st.sampled_from(PLANNER_KINDS),
    objective_kind=st.sampled_from(OBJECTIVE_KINDS),
    horizon=st.integers(1, 6),
    action_dim=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    warm=st.booleans(),
)
def test_actions_finite_and_inside_bounds(
    planner_kind: str, objective_kind: str, horizon: int, action_dim: int, seed: int, warm: bool
) -> None:
    g = gen(seed)
    low = -3.0 * torch.rand(action_dim, generator=g)
    high = low + 0.1 + 3.0 * torch.rand(action_dim, generator=g)
    # The unconstrained optimum often lies outside the box, so the bounds bind.
    target = 8.0 * torch.rand(horizon, 1, action_dim, generator=g) - 4.0
    raw_objective = make_objective(objective_kind, target, low, high)
    saw_finite = False

    def objective(a: Tensor) -> Tensor:
        nonlocal saw_finite
        cost = raw_objective(a)
        saw_finite |= bool(torch.isfinite(cost).any())
        return cost

    init = 10.0 * torch.randn(horizon, action_dim, generator=g) if warm else None
    if init is not None:
        init[0, 0] = math.nan  # a corrupt warm start must not leak into the plan

    result = make_planner(planner_kind, horizon, low, high).plan(objective, init, generator=g)

    assert result.actions.shape == (horizon, action_dim)
    assert torch.isfinite(result.actions).all()
    assert (result.actions >= low).all() and (result.actions <= high).all()
    # A non-finite cost is never selected: the result is finite iff some evaluated candidate was,
    # and the reported cost is that of the returned actions.
    assert math.isfinite(result.cost) == saw_finite
    if objective_kind == "all_nan":
        assert result.cost == math.inf
    if saw_finite:
        recomputed = float(raw_objective(result.actions.unsqueeze(1))[0])
        assert recomputed == pytest.approx(result.cost, rel=1e-4)


def test_objective_with_wrong_shape_is_rejected() -> None:
    for kind in PLANNER_KINDS:
        planner = make_planner(kind, 3, torch.zeros(2), torch.ones(2))
        with pytest.raises(ValueError, match="shape"):
            planner.plan(lambda a: a.sum(dim=(0, 2)).unsqueeze(-1))


# --------------------------------------------------------------------------------------------
# Determinism, warm start, early stop, building blocks.


@pytest.mark.parametrize("kind", PLANNER_KINDS)
def test_same_seed_same_plan(kind: str) -> None:
    problem = lqr_problem(torch.float32)
    low, high = torch.full((2,), -2.0), torch.full((2,), 2.0)
    runs = [
        make_planner(kind, problem.horizon, low, high).plan(problem.objective, generator=gen(7))
        for _ in range(2)
    ]
    assert torch.equal(runs[0].actions, runs[1].actions)
    assert runs[0].cost == runs[1].cost and runs[0].iterations == runs[1].iterations
    other = make_planner(kind, problem.horizon, low, high).plan(problem.objective, generator=gen(8))
    if kind != "gradient":  # the gradient planner's warm start converges regardless of seed
        assert not torch.equal(runs[0].actions, other.actions)


@pytest.mark.parametrize("kind", PLANNER_KINDS)
def test_warm_start_at_optimum_is_never_worse(kind: str) -> None:
    problem = lqr_problem()
    low, high = torch.full((2,), -BOUND), torch.full((2,), BOUND)
    planner = make_planner(kind, problem.horizon, low, high, dtype=torch.float64)
    result = planner.plan(problem.objective, init=problem.u_star, generator=gen())
    assert result.cost <= lqr_cost(problem, problem.u_star) * (1 + 1e-12)


def test_gradient_planner_stops_early_on_easy_problem() -> None:
    target = torch.tensor([[0.3, -0.2]]).expand(5, 2)

    def objective(a: Tensor) -> Tensor:
        return ((a - target.unsqueeze(1)) ** 2).sum(dim=(0, 2))

    planner = GradientPlanner(5, -1.0, 1.0, 2, iterations=1000, lr=0.05, lr_decay=0.97)
    result = planner.plan(objective, generator=gen())
    assert result.iterations < 1000
    assert result.cost < 1e-4


def test_cem_population_shrinks_and_reuses_elite_costs() -> None:
    sizes: list[int] = []

    def objective(a: Tensor) -> Tensor:
        sizes.append(a.shape[1])
        return (a**2).sum(dim=(0, 2))

    planner = CEMPlanner(
        4, -1.0, 1.0, 2, iterations=5, population=100, elites=10, population_decay=2.0,
        min_population=20,
    )  # fmt: skip
    result = planner.plan(objective, generator=gen())
    # Fresh samples plus the mean; kept elites are not re-evaluated.
    assert sizes == [101, 51, 26, 21, 21]
    assert result.iterations == 5


def test_shift_plan() -> None:
    plan = torch.arange(6.0).reshape(3, 2)
    torch.testing.assert_close(shift_plan(plan), torch.tensor([[2.0, 3], [4, 5], [4, 5]]))
    torch.testing.assert_close(
        shift_plan(plan, torch.zeros(2)), torch.tensor([[2.0, 3], [4, 5], [0, 0]])
    )


def test_colored_noise_statistics() -> None:
    def lag1(x: Tensor) -> float:  # the noise has zero mean by construction
        return float((x[1:] * x[:-1]).mean() / (x**2).mean())

    correlations = []
    for beta in (0.0, 1.0, 2.0):
        noise = colored_noise(beta, 32, (4000, 2), generator=gen(), dtype=torch.float64)
        assert noise.shape == (32, 4000, 2)
        assert float(noise.var()) == pytest.approx(1.0, rel=0.1)
        correlations.append(lag1(noise))
        again = colored_noise(beta, 32, (4000, 2), generator=gen(), dtype=torch.float64)
        assert torch.equal(noise, again)
    assert abs(correlations[0]) < 0.02
    assert correlations[0] < correlations[1] < correlations[2]
    assert colored_noise(2.0, 1, (3,), generator=gen()).shape == (1, 3)


def test_protocols_and_bound_validation() -> None:
    planners = [make_planner(k, 3, torch.zeros(2), torch.ones(2)) for k in PLANNER_KINDS]
    assert all(isinstance(p, Planner) for p in planners)
    assert all(isinstance(p, PopulationPlanner) for p in planners[:3])
    assert all(p.horizon == 3 and p.action_high.shape == (2,) for p in planners)  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        GradientPlanner(3, 1.0, -1.0, 2)
    with pytest.raises(ValueError):
        CEMPlanner(3, -math.inf, 1.0, 2)
    with pytest.raises(ValueError):
        MPPIPlanner(3, -1.0, 1.0)  # float bounds need action_dim
    with pytest.raises(ValueError, match="share"):
        HybridPlanner(CEMPlanner(3, -1.0, 1.0, 2), GradientPlanner(4, -1.0, 1.0, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", PLANNER_KINDS)
def test_planners_run_on_cuda(kind: str) -> None:
    problem = lqr_problem(torch.float32, device="cuda")
    # Tight enough bounds (|u*| < 2) for the small planners' default noise to be useful.
    low, high = torch.full((2,), -2.5, device="cuda"), torch.full((2,), 2.5, device="cuda")
    planner = make_planner(kind, problem.horizon, low, high, device="cuda")
    # A CPU generator drives a CUDA planner reproducibly.
    runs = [planner.plan(problem.objective, generator=gen(3)) for _ in range(2)]
    assert runs[0].actions.device.type == "cuda"
    assert torch.equal(runs[0].actions, runs[1].actions)
    assert math.isfinite(runs[0].cost) and runs[0].cost < lqr_cost(problem, 0 * problem.u_star)
