"""iCEM and MPPI settings with known answers: the defaults the built planner carries, the ends of
each argument's range and the messages outside it, the default noise scale (a quarter of the
range), and MPPI's update as the softmax(-cost / temperature) average of its batch."""

from __future__ import annotations

import pytest
import torch
from planner_problems import gen
from torch import Tensor

from agents.planners import CEMPlanner, MPPIPlanner


def test_cem_defaults_are_the_documented_ones() -> None:
    """Checked on the built planner: mutmut's trampolines hide the signature's defaults."""
    cem = CEMPlanner(3, -1.0, 1.0, 1)
    settings = (cem.iterations, cem.population, cem.elites, cem.population_decay, cem.beta)
    assert settings == (5, 256, 16, 1.25, 2.0)
    assert (cem.min_population, cem.keep_elites, cem.alpha) == (32, 0.3, 0.1)


def test_mppi_defaults_are_the_documented_ones() -> None:
    mppi = MPPIPlanner(3, -1.0, 1.0, 1)
    assert (mppi.iterations, mppi.samples, mppi.temperature, mppi.beta) == (5, 256, 1.0, 0.0)


@pytest.mark.parametrize("cls", [CEMPlanner, MPPIPlanner])
def test_samplers_live_on_the_device_asked_for(cls: type) -> None:
    """'cpu:0' is not the default torch.device('cpu'): the argument reaches the base class."""
    assert cls(3, -1.0, 1.0, 1, device="cpu:0").device == torch.device("cpu", 0)


@pytest.mark.parametrize("settings", [{"population_decay": 0.99}, {"keep_elites": 1.5},
                                      {"alpha": 1.0}])  # fmt: skip
def test_cem_names_its_decay_keep_and_momentum_ranges(settings: dict) -> None:
    message = r"^need population_decay >= 1, 0 <= keep_elites <= 1, 0 <= alpha < 1$"
    with pytest.raises(ValueError, match=message):
        CEMPlanner(3, -1.0, 1.0, 1, population=16, elites=4, **settings)


@pytest.mark.parametrize(
    "settings", [{"iterations": 0}, {"samples": 0}, {"temperature": 0.0}, {"temperature": -1.0}]
)
def test_mppi_refuses_each_setting_outside_its_range_alone(settings: dict) -> None:
    message = r"^need iterations >= 1, samples >= 1 and temperature > 0$"
    with pytest.raises(ValueError, match=message):
        MPPIPlanner(3, -1.0, 1.0, 1, **({"iterations": 2, "samples": 4} | settings))


def test_mppi_accepts_one_iteration_of_one_sample_at_a_tiny_temperature() -> None:
    mppi = MPPIPlanner(3, -1.0, 1.0, 1, iterations=1, samples=1, temperature=1e-12)
    assert (mppi.iterations, mppi.samples, mppi.temperature) == (1, 1, 1e-12)


@pytest.mark.parametrize("cls, attribute", [(CEMPlanner, "init_std"), (MPPIPlanner, "sigma")])
def test_the_default_noise_scale_is_a_quarter_of_each_action_range(cls: type, attribute: str):
    planner = cls(3, torch.tensor([-1.0, 0.0]), torch.tensor([3.0, 0.5]))
    torch.testing.assert_close(getattr(planner, attribute), torch.tensor([1.0, 0.125]))


@pytest.mark.parametrize("cls, name", [(CEMPlanner, "init_std"), (MPPIPlanner, "sigma")])
def test_a_given_noise_scale_is_in_the_planners_dtype_per_action_dim(cls: type, name: str):
    """A float is cast once to the planner's dtype (so 0.1 is float64's 0.1, not float32's)."""
    planner = cls(3, -1.0, 1.0, 2, dtype=torch.float64, **{name: 0.1})
    scale = getattr(planner, name)
    assert scale.dtype == torch.float64
    torch.testing.assert_close(scale, torch.tensor([0.1, 0.1], dtype=torch.float64),
                               rtol=0, atol=0)  # fmt: skip


def test_mppi_moves_its_mean_to_the_softmax_weighted_average_of_its_batch() -> None:
    """The second iteration's nominal (its batch's first sequence) is sum_j w_j batch_j with
    w = softmax(-cost / temperature) over the first batch, computed here by hand."""
    temperature = 0.5
    planner = MPPIPlanner(4, -1.0, 1.0, 2, iterations=2, samples=9, sigma=0.4,
                          temperature=temperature, dtype=torch.float64)  # fmt: skip
    target = torch.tensor([0.3, -0.2], dtype=torch.float64)
    batches: list[Tensor] = []

    def objective(actions: Tensor) -> Tensor:
        batches.append(actions.clone())
        return ((actions - target) ** 2).sum(dim=(0, 2))

    planner.plan(objective, generator=gen(5))
    first = batches[0]
    cost = ((first - target) ** 2).sum(dim=(0, 2))
    weights = torch.exp(-(cost - cost.min()) / temperature)
    weights = weights / weights.sum()
    expected = (weights[None, :, None] * first).sum(dim=1)
    torch.testing.assert_close(batches[1][:, 0], expected, rtol=1e-12, atol=1e-12)
