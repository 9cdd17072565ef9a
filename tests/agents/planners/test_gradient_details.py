"""The gradient planner's details with known answers: gradients of objectives that ignore the
actions, defaults and argument ranges, the early-stopping rule on hand-made histories, seeded
restarts, ties, the dtype of what it returns, and where NaN iterates are put back."""

from __future__ import annotations

import math

import pytest
import torch
from planner_problems import gen
from torch import Tensor

from agents.planners import GradientPlanner, objective_gradient


def squared(actions: Tensor) -> Tensor:
    return (actions**2).sum(dim=(0, 2))


# --------------------------------------------------------------------------------------------
# objective_gradient


def test_an_objective_that_ignores_the_actions_has_zero_gradient() -> None:
    """The cost depends on a parameter that requires grad, not on the actions: autograd finds
    no path to them, and the answer is the cost with an all-zero gradient."""
    weight = torch.tensor(3.0, requires_grad=True)
    actions = torch.randn(4, 5, 2, generator=gen(0))

    cost, grad = objective_gradient(lambda a: (weight * 2.0).expand(a.shape[1]), actions)
    torch.testing.assert_close(cost, torch.full((5,), 6.0), rtol=0, atol=0)
    assert not cost.requires_grad
    torch.testing.assert_close(grad, torch.zeros(4, 5, 2), rtol=0, atol=0)


def test_an_objective_without_autograd_has_zero_gradient() -> None:
    cost, grad = objective_gradient(lambda a: torch.ones(a.shape[1]), torch.ones(3, 2, 1))
    torch.testing.assert_close(cost, torch.ones(2), rtol=0, atol=0)
    torch.testing.assert_close(grad, torch.zeros(3, 2, 1), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# Settings


def test_gradient_defaults_are_the_documented_ones() -> None:
    """Checked on the built planner: mutmut's trampolines hide the signature's defaults."""
    planner = GradientPlanner(3, -1.0, 1.0, 1)
    settings = (planner.iterations, planner.candidates, planner.lr, planner.lr_decay)
    assert settings == (100, 8, 0.05, 1.0)
    assert (planner.max_grad_norm, planner.patience, planner.tol) == (10.0, 20, 1e-5)


@pytest.mark.parametrize("settings", [{"iterations": -1}, {"candidates": 0}, {"patience": 0}])
def test_gradient_planner_refuses_each_setting_outside_its_range_alone(settings: dict) -> None:
    message = r"^need iterations >= 0, candidates >= 1 and patience >= 1$"
    with pytest.raises(ValueError, match=message):
        GradientPlanner(3, -1.0, 1.0, 1, **({"iterations": 2, "candidates": 2} | settings))


def test_gradient_planner_accepts_the_ends_of_its_ranges() -> None:
    planner = GradientPlanner(3, -1.0, 1.0, 1, iterations=0, candidates=1, patience=1)
    assert (planner.iterations, planner.candidates, planner.patience) == (0, 1, 1)


def test_starts_whose_time_and_action_axes_fit_but_not_their_rank_are_refused() -> None:
    planner = GradientPlanner(3, -1.0, 1.0, 2, iterations=1)
    with pytest.raises(ValueError, match=r"^starts must be \[T=3, N, A=2\], got \(3, 1, 2, 1\)$"):
        planner.optimize(squared, torch.zeros(3, 1, 2, 1))


# --------------------------------------------------------------------------------------------
# Early stopping: converged once the best cost gained less than tol (relative) in patience steps.


@pytest.mark.parametrize(
    "history, converged",
    [
        ([10.0, 5.0], False),  # not yet patience + 1 entries
        ([10.0, 5.0, 4.5], False),  # gain (10 - 4.5) / 10 over the window, not (4.5 - 4.5)
        ([10.0, 10.0, 5.0], False),  # the window ends at the last entry, not the one before
        ([10.0, 10.0, 9.5], True),  # gain 0.05 < 0.1: relative, not (10 - 9.5) * 10
        ([10.0, 10.0, 9.0], False),  # gain exactly tol still counts as progress
        ([0.01, 0.01, 0.005], False),  # small costs: relative to 0.01, not to 1
        ([0.0, 0.0, -0.5], False),  # from 0 the scale floor 1e-12 makes any gain large
        ([math.inf, math.inf, math.inf], True),  # nothing finite to improve
        ([1.0, 5.0, 4.0, 3.95], False),  # only the last patience + 1 entries: 5 -> 3.95
    ],
)
def test_convergence_compares_the_best_cost_patience_steps_apart(
    history: list[float], converged: bool
) -> None:
    planner = GradientPlanner(3, -1.0, 1.0, 1, patience=2, tol=0.1)
    assert planner._converged([[h] for h in history]) is converged


def test_a_batch_has_converged_only_once_no_group_improves() -> None:
    """Groups (problems planned together) each keep their best; one still improving keeps the
    run going, whichever group it is."""
    planner = GradientPlanner(3, -1.0, 1.0, 1, patience=2, tol=0.1)
    flat = [10.0, 10.0, 9.5]
    falling = [10.0, 10.0, 5.0]
    assert planner._converged([[a, b] for a, b in zip(flat, flat, strict=True)])
    assert not planner._converged([[a, b] for a, b in zip(flat, falling, strict=True)])
    assert not planner._converged([[a, b] for a, b in zip(falling, flat, strict=True)])


# --------------------------------------------------------------------------------------------
# Restarts, ties, dtype, NaN iterates.


def test_restarts_are_drawn_from_the_planners_generator() -> None:
    """With no Adam step the population is the start and candidates - 1 uniform draws of the
    given generator, sorted by cost."""
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0])
    planner = GradientPlanner(3, low, high, iterations=0, candidates=4)
    population = planner.plan_population(squared, 4, generator=gen(9))
    draws = low + torch.rand(3, 3, 2, generator=gen(9)) * (high - low)
    starts = torch.cat([torch.tensor([0.0, 1.0]).expand(3, 1, 2), draws], dim=1)
    order = torch.argsort(squared(starts))
    torch.testing.assert_close(population.actions, starts[:, order], rtol=0, atol=0)


def test_candidates_of_equal_cost_keep_their_order() -> None:
    """A sort that is not stable reorders 40 ties; the population keeps the starts' order."""
    planner = GradientPlanner(2, -1.0, 1.0, 1, iterations=0)
    starts = torch.linspace(-1.0, 1.0, 40).expand(2, 40)[..., None]
    population = planner.optimize(lambda a: torch.zeros(a.shape[1]), starts)
    torch.testing.assert_close(population.actions, starts, rtol=0, atol=0)


def test_a_later_iterate_of_equal_cost_does_not_replace_the_best() -> None:
    """The cost is flat (1 everywhere) but its gradient is not, so Adam moves: only a strictly
    lower cost replaces a candidate's best, which stays the start."""

    def flat(actions: Tensor) -> Tensor:
        total = actions.sum(dim=(0, 2))
        return total - total.detach() + 1.0

    planner = GradientPlanner(2, -1.0, 1.0, 1, iterations=3, candidates=1, lr=0.1)
    result = planner.plan(flat, init=torch.zeros(2, 1))
    torch.testing.assert_close(result.actions, torch.zeros(2, 1), rtol=0, atol=0)
    assert result.cost == 1.0


def test_float64_starts_and_costs_come_back_in_the_planners_float32() -> None:
    planner = GradientPlanner(2, -1.0, 1.0, 1, iterations=2, lr=0.1)
    starts = torch.full((2, 3, 1), 0.5, dtype=torch.float64)
    seen: list[torch.dtype] = []

    def objective(actions: Tensor) -> Tensor:
        seen.append(actions.dtype)
        return squared(actions).double()

    population = planner.optimize(objective, starts)
    assert set(seen) == {torch.float32}
    assert population.actions.dtype == torch.float32 and population.costs.dtype == torch.float32


def test_a_nan_iterate_is_put_back_at_zero_then_clipped() -> None:
    """An infinite step size times a zero first moment is NaN: those entries restart at 0 (inside
    the box [-1, 2]); entries with a gradient overshoot to the lower bound."""
    low, high = torch.tensor([-1.0, -1.0]), torch.tensor([2.0, 2.0])
    planner = GradientPlanner(3, low, high, iterations=1, candidates=1, lr=math.inf,
                              max_grad_norm=None)  # fmt: skip
    result = planner.plan(lambda a: a[..., 0].sum(dim=0), init=torch.full((3, 2), 0.5))
    torch.testing.assert_close(result.actions, torch.tensor([[-1.0, 0.0]]).expand(3, 2))
    assert result.cost == -3.0


def test_one_candidates_huge_gradient_does_not_change_anothers_clipping() -> None:
    """Each candidate is normalised by its own peak: next to a 3e38 gradient, (30, 40) is still
    clipped to norm 10, i.e. (6, 8), in float32."""
    planner = GradientPlanner(2, -1.0, 1.0, 1, max_grad_norm=10.0)
    grad = torch.tensor([[[3e38], [30.0]], [[3e38], [40.0]]])  # [T, N, A]
    conditioned = planner._condition(grad)
    torch.testing.assert_close(conditioned[:, 1], torch.tensor([[6.0], [8.0]]))
    torch.testing.assert_close(conditioned[:, 0], torch.full((2, 1), 10.0 / math.sqrt(2.0)))


def hand_adam(
    x: Tensor, grad_fn, steps: int, lr: float, decay: float, max_norm: float
) -> list[Tensor]:
    """Adam (betas 0.9, 0.999, eps 1e-8, bias-corrected) on [T, N, A] iterates, each
    candidate's [T, A] gradient clipped to max_norm first, the step size times decay after each
    step; the iterates it visits, the start included."""
    m, v, iterates = torch.zeros_like(x), torch.zeros_like(x), [x]
    for t in range(1, steps + 1):
        g = grad_fn(x)
        norm = g.pow(2).sum(dim=(0, 2), keepdim=True).sqrt()
        g = g * torch.clamp(max_norm / norm, max=1.0)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
        m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
        x = x - lr * decay ** (t - 1) * m_hat / (v_hat.sqrt() + 1e-8)
        iterates.append(x)
    return iterates


def test_gradient_planner_takes_clipped_decaying_adam_steps_on_a_quadratic() -> None:
    """Six steps on sum h (x - c)^2 / 2 from two starts whose first gradients (norms 7.7 and
    13.1) are clipped to 3: each candidate ends at the cheapest iterate hand-written Adam visits."""
    h = torch.tensor([1.0, 4.0], dtype=torch.float64)
    c = torch.tensor([0.3, -0.2], dtype=torch.float64)

    def cost(a: Tensor) -> Tensor:
        return (0.5 * h * (a - c) ** 2).sum(dim=(0, 2))

    starts = torch.stack([torch.full((3, 2), 0.9), torch.full((3, 2), -2.0)], dim=1).double()
    planner = GradientPlanner(3, -5.0, 5.0, 2, iterations=6, lr=0.2, lr_decay=0.7,
                              max_grad_norm=3.0, dtype=torch.float64)  # fmt: skip
    population = planner.optimize(cost, starts)

    iterates = torch.stack(hand_adam(starts, lambda a: h * (a - c), 6, 0.2, 0.7, 3.0))
    costs = torch.stack([cost(x) for x in iterates])  # [steps + 1, N]
    best = costs.argmin(dim=0)
    expected = iterates[best, :, torch.arange(2)].transpose(0, 1)  # [T, N, A]
    order = torch.argsort(costs.min(dim=0).values)
    assert population.iterations == 6
    torch.testing.assert_close(population.actions, expected[:, order], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(population.costs, costs.min(dim=0).values[order])
