"""The planners' shared machinery with known answers: argument validation (and its messages),
dtype and device placement of what they create, the box centre as default start, the top-k
archive, the hybrid's choice between its stages and the samplers' draws."""

from __future__ import annotations

import math

import pytest
import torch
from planner_problems import gen
from torch import Generator, Tensor

from agents.configurator.config import PlannerConfig
from agents.planners import (
    CEMPlanner,
    GradientPlanner,
    HybridPlanner,
    MPPIPlanner,
    Population,
    shift_plan,
)
from agents.planners.base import BoundedPlanner, merge_top_k, rand, randn

LOW, HIGH = torch.tensor([0.2, -1.0]), torch.tensor([0.9, -0.5])
MID = torch.tensor([0.55, -0.75])


def squared(actions: Tensor) -> Tensor:
    return (actions**2).sum(dim=(0, 2))


# --------------------------------------------------------------------------------------------
# Construction: bounds, action_dim, device.


def test_float_bounds_without_action_dim_are_refused_with_a_message() -> None:
    with pytest.raises(ValueError, match="^action_dim is required when both bounds are floats$"):
        GradientPlanner(3, -1.0, 1.0)


def test_one_tensor_bound_gives_the_action_dim() -> None:
    planner = GradientPlanner(3, torch.zeros(2), 1.0)
    assert planner.action_dim == 2
    torch.testing.assert_close(planner.action_high, torch.ones(2))
    assert CEMPlanner(3, -1.0, torch.ones(3)).action_dim == 3


def test_a_degenerate_box_pins_the_action() -> None:
    planner = GradientPlanner(2, torch.tensor([0.3]), torch.tensor([0.3]), iterations=3)
    result = planner.plan(squared, generator=gen())
    torch.testing.assert_close(result.actions, torch.full((2, 1), 0.3))
    assert result.cost == pytest.approx(2 * 0.3**2)


@pytest.mark.parametrize("low, high", [(1.0, -1.0), (-math.inf, 1.0), (-1.0, math.nan)])
def test_bounds_that_are_not_a_finite_box_are_refused_with_a_message(
    low: float, high: float
) -> None:
    with pytest.raises(ValueError, match="^action bounds must be finite with action_low <= "):
        MPPIPlanner(3, low, high, 2)


def test_the_planners_device_is_the_one_asked_for_and_the_cpu_by_default() -> None:
    assert GradientPlanner(3, -1.0, 1.0, 2).device == torch.device("cpu")
    assert GradientPlanner(3, -1.0, 1.0, 2, device="cpu:0").device == torch.device("cpu", 0)


# --------------------------------------------------------------------------------------------
# Start, dtype, objective checks.


def test_without_a_warm_start_the_search_starts_at_the_centre_of_the_box() -> None:
    planner = GradientPlanner(3, LOW, HIGH, iterations=0, candidates=1)
    result = planner.plan(squared)
    torch.testing.assert_close(result.actions, MID.expand(3, 2))
    assert result.cost == pytest.approx(3 * float((MID**2).sum()))


def test_non_finite_entries_of_a_warm_start_take_the_centre_of_the_box() -> None:
    planner = GradientPlanner(2, LOW, HIGH, iterations=0, candidates=1)
    init = torch.tensor([[math.nan, 5.0], [0.3, -math.inf]])
    result = planner.plan(squared, init=init)
    torch.testing.assert_close(result.actions, torch.tensor([[0.55, -0.5], [0.3, -0.75]]))


def test_non_finite_starts_of_the_gradient_planner_take_the_centre_of_the_box() -> None:
    planner = GradientPlanner(2, LOW, HIGH, iterations=0)
    starts = torch.tensor([[[math.nan, -0.6]], [[0.4, math.inf]]])  # [T, N=1, A]
    population = planner.optimize(squared, starts)
    # inf is clipped onto the bound, NaN (which clamp keeps) replaced by the centre.
    torch.testing.assert_close(population.actions[:, 0], torch.tensor([[0.55, -0.6], [0.4, -0.5]]))


def test_a_warm_start_of_another_dtype_is_cast_to_the_planners() -> None:
    planner = CEMPlanner(3, -1.0, 1.0, 2, iterations=1, population=8, elites=2)
    init = torch.full((3, 2), 0.25, dtype=torch.float64)
    seen: list[torch.dtype] = []

    def objective(actions: Tensor) -> Tensor:
        seen.append(actions.dtype)
        return squared(actions)

    result = planner.plan(objective, init=init, generator=gen())
    assert seen == [torch.float32] and result.actions.dtype == torch.float32


def test_costs_come_back_in_the_planners_dtype() -> None:
    planner = CEMPlanner(3, -1.0, 1.0, 2, iterations=2, population=8, elites=2)
    population = planner.plan_population(lambda a: squared(a).double(), 3, generator=gen())
    assert population.costs.dtype == torch.float32
    mppi = MPPIPlanner(3, -1.0, 1.0, 2, iterations=1, samples=8, dtype=torch.float64)
    population = mppi.plan_population(lambda a: squared(a).float(), 3, generator=gen())
    assert population.costs.dtype == torch.float64


def test_an_objective_of_the_wrong_shape_is_named_in_the_message() -> None:
    planner = MPPIPlanner(3, -1.0, 1.0, 2, iterations=1, samples=16)
    # The batch is the 16 samples plus the mean.
    with pytest.raises(ValueError, match=r"shape \[N\]=\(17,\), got \(17, 1\)$"):
        planner.plan(lambda a: squared(a)[:, None], generator=gen())


# --------------------------------------------------------------------------------------------
# Random draws: the generator's stream, in the planner's dtype, placed on its device.


def test_uniform_restarts_are_the_generators_draws_scaled_to_the_box() -> None:
    low, high = LOW.double(), HIGH.double()
    planner = GradientPlanner(4, low, high, dtype=torch.float64)
    draws = planner._uniform(5, gen(3))
    u = torch.rand(4, 5, 2, generator=gen(3), dtype=torch.float64)
    torch.testing.assert_close(draws, low + u * (high - low), rtol=0, atol=1e-15)


def test_draws_follow_the_generator_in_the_requested_dtype() -> None:
    for draw, reference in ((rand, torch.rand), (randn, torch.randn)):
        got = draw((3, 4), gen(5), torch.device("cpu"), torch.float64)
        assert got.dtype == torch.float64
        torch.testing.assert_close(
            got, reference(3, 4, generator=gen(5), dtype=torch.float64), rtol=0, atol=0
        )


@pytest.mark.parametrize("draw", [rand, randn])
def test_draws_are_placed_on_the_requested_device_with_or_without_a_generator(draw) -> None:
    # The meta device stands in for an accelerator: a CPU generator still drives the draw.
    meta = torch.device("meta")
    assert draw((2, 3), gen(), meta, torch.float32).device == meta
    assert draw((2, 3), None, meta, torch.float32).device == meta


# --------------------------------------------------------------------------------------------
# shift_plan and the top-k archive.


def test_shift_plan_casts_the_fill_to_the_plans_dtype() -> None:
    plan = torch.arange(6.0).reshape(3, 2)
    shifted = shift_plan(plan, torch.tensor([7.0, 8.0], dtype=torch.float64))
    assert shifted.dtype == torch.float32
    torch.testing.assert_close(shifted, torch.tensor([[2.0, 3.0], [4.0, 5.0], [7.0, 8.0]]))


def test_the_archive_keeps_the_k_cheapest_sorted_by_cost() -> None:
    g = gen(0)
    actions = torch.rand(3, 100, 2, generator=g)
    costs = torch.rand(100, generator=g, dtype=torch.float64)
    kept, kept_costs = merge_top_k(None, actions[:, :60], costs[:60], 10)
    kept, kept_costs = merge_top_k((kept, kept_costs), actions[:, 60:], costs[60:], 10)
    order = sorted(range(100), key=lambda i: float(costs[i]))[:10]
    torch.testing.assert_close(kept_costs, costs[order], rtol=0, atol=0)
    torch.testing.assert_close(kept, actions[:, order], rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# The hybrid: the refiner it builds, the stage it returns, the iterations it reports.


def test_the_default_refiner_has_the_samplers_horizon_bounds_and_dtype() -> None:
    sampler = CEMPlanner(3, LOW.double(), HIGH.double(), iterations=1, population=8, elites=2,
                         dtype=torch.float64)  # fmt: skip
    hybrid = HybridPlanner(sampler, top_k=2)
    assert hybrid.refiner.dtype == torch.float64 and hybrid.refiner.horizon == 3
    torch.testing.assert_close(hybrid.refiner.action_low, sampler.action_low, rtol=0, atol=0)
    torch.testing.assert_close(hybrid.refiner.action_high, sampler.action_high, rtol=0, atol=0)
    assert hybrid.plan(squared, generator=gen()).actions.dtype == torch.float64


def test_a_refiner_of_another_shape_is_refused_with_a_message() -> None:
    with pytest.raises(ValueError, match="^sampler and refiner must share horizon and action bo"):
        HybridPlanner(CEMPlanner(3, -1.0, 1.0, 2), GradientPlanner(3, -1.0, 0.5, 2))


class ScriptedSampler(BoundedPlanner):
    """Hands back a fixed population and records the k it was asked for."""

    def __init__(self, population: Population) -> None:
        super().__init__(2, -1.0, 1.0, 1)
        self.population, self.ks = population, []

    def _search(self, objective, k: int, start: Tensor, generator: Generator | None) -> Population:
        self.ks.append(k)
        return self.population


class ScriptedRefiner(GradientPlanner):
    """Hands back a fixed population and records the starts it was given."""

    def __init__(self, population: Population) -> None:
        super().__init__(2, -1.0, 1.0, 1)
        self.population, self.starts = population, []

    def optimize(self, objective, starts: Tensor) -> Population:
        self.starts.append(starts)
        return self.population


COARSE = Population(torch.tensor([[[0.1], [0.2]], [[0.3], [0.4]]]), torch.tensor([1.0, 3.0]), 5)


@pytest.mark.parametrize(
    "fine_costs, refined_wins",
    [([0.5, 4.0], True), ([2.0, 2.5], False), ([4.0, 5.0], False)],
)
def test_the_hybrid_returns_the_cheaper_stages_best_and_counts_both_stages(
    fine_costs: list[float], refined_wins: bool
) -> None:
    fine = Population(torch.tensor([[[-0.1], [-0.2]], [[-0.3], [-0.4]]]),
                      torch.tensor(fine_costs), 7)  # fmt: skip
    sampler, refiner = ScriptedSampler(COARSE), ScriptedRefiner(fine)
    result = HybridPlanner(sampler, refiner, top_k=2).plan(squared)
    assert sampler.ks == [2] and refiner.starts[0] is COARSE.actions
    winner = fine if refined_wins else COARSE
    torch.testing.assert_close(result.actions, winner.actions[:, 0])
    assert result.cost == float(winner.costs[0])
    assert result.iterations == 12


# --------------------------------------------------------------------------------------------
# The samplers' settings.


def test_cem_refuses_bad_sizes_with_a_message() -> None:
    with pytest.raises(ValueError, match="^need iterations >= 1 and population, min_popul"):
        CEMPlanner(3, -1.0, 1.0, 1, population=7, elites=8)


def test_mppi_built_without_a_temperature_uses_the_configurators() -> None:
    # An attribute, not the signature: mutmut's trampoline reports the original signature.
    assert MPPIPlanner(3, -1.0, 1.0, 1).temperature == PlannerConfig().temperature


def test_mppi_perturbs_its_mean_with_white_noise_of_std_sigma_by_default() -> None:
    """Classic MPPI: the first batch is the mean (the box centre), then mean + sigma * N(0, 1)
    per action dimension, clipped to the box; here the generator's own normal draws."""
    sigma = torch.tensor([0.1, 0.3], dtype=torch.float64)
    planner = MPPIPlanner(4, -1.0, 1.0, 2, iterations=1, samples=6, sigma=sigma,
                          dtype=torch.float64)  # fmt: skip
    batches: list[Tensor] = []

    def objective(actions: Tensor) -> Tensor:
        batches.append(actions.clone())
        return squared(actions)

    planner.plan(objective, generator=gen(2))
    noise = torch.randn(4, 6, 2, generator=gen(2), dtype=torch.float64)
    torch.testing.assert_close(batches[0][:, 0], torch.zeros(4, 2, dtype=torch.float64))
    torch.testing.assert_close(batches[0][:, 1:], (sigma * noise).clamp(-1.0, 1.0))
