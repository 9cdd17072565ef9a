import math

import pytest
import torch

from worldmodel.forward.scoring import energy_score, interval_coverage, mode_shares


def test_energy_score_of_one_sample_is_its_error_norm() -> None:
    samples = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])  # [K=1, N=2, D=2]
    target = torch.zeros(2, 2)
    torch.testing.assert_close(energy_score(samples, target), torch.tensor([5.0, 1.0]))


def test_energy_score_of_gaussian_samples_is_the_closed_form_crps() -> None:
    # In 1-D the energy score is the CRPS: sigma (z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)).
    g = torch.Generator().manual_seed(0)
    sigma, y = 2.0, torch.tensor([[1.5]])
    samples = sigma * torch.randn(4000, 1, 1, generator=g, dtype=torch.float64)
    z = y.item() / sigma
    phi = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    big_phi = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    crps = sigma * (z * (2 * big_phi - 1) + 2 * phi - 1 / math.sqrt(math.pi))
    assert energy_score(samples, y.double()).item() == pytest.approx(crps, rel=0.03)


def test_a_sampler_of_two_symmetric_modes_scores_half_the_mean_predictor() -> None:
    g = torch.Generator().manual_seed(1)
    d = 0.7
    target = d * (2 * torch.randint(0, 2, (2000, 1), generator=g).double() - 1)
    samples = d * (2 * torch.randint(0, 2, (64, 2000, 1), generator=g).double() - 1)
    mean_predictor = energy_score(torch.zeros(1, 2000, 1, dtype=torch.float64), target).mean()
    sampler = energy_score(samples, target).mean()
    assert mean_predictor.item() == pytest.approx(d)
    assert (sampler / mean_predictor).item() == pytest.approx(0.5, abs=0.02)


def test_interval_coverage_of_calibrated_samples_is_the_level() -> None:
    g = torch.Generator().manual_seed(2)
    samples = torch.randn(200, 3000, 2, generator=g)
    target = torch.randn(3000, 2, generator=g)
    coverage = interval_coverage(samples, target, level=0.8)
    torch.testing.assert_close(coverage, torch.full((2,), 0.8), atol=0.03, rtol=0)
    too_narrow = interval_coverage(0.3 * samples, target, level=0.8)
    assert (too_narrow < 0.4).all()


def test_interval_coverage_refuses_a_level_outside_0_1() -> None:
    with pytest.raises(ValueError, match="level must be in"):
        interval_coverage(torch.zeros(2, 1, 1), torch.zeros(1, 1), level=1.0)


def test_mode_shares_tell_modes_from_their_mean() -> None:
    outcomes = torch.tensor([[[-1.0, 0.0]], [[1.0, 0.0]]]).expand(2, 5, 2)  # [M=2, N=5, D=2]
    on_modes = torch.tensor([-1.0, 1.0, -0.9, 1.2]).view(4, 1, 1).expand(4, 5, 1)
    on_modes = torch.cat([on_modes, torch.zeros(4, 5, 1)], -1)
    at_mean = torch.zeros(4, 5, 2)
    between = torch.full((4, 5, 2), 0.0).index_fill(-1, torch.tensor([0]), 0.6)
    assert mode_shares(on_modes, outcomes) == (1.0, 0.0)
    assert mode_shares(at_mean, outcomes) == (0.0, 1.0)
    # 0.4 from a mode and 0.6 from the mean: at a mode within 0.25 x 2, at neither within 0.15 x 2
    assert mode_shares(between, outcomes) == (1.0, 0.0)
    assert mode_shares(between, outcomes, tolerance=0.15) == (0.0, 0.0)


def test_mode_shares_leave_out_transitions_without_distinct_outcomes() -> None:
    outcomes = torch.tensor([[[0.0], [-1.0]], [[0.0], [1.0]]])  # transition 0 has one outcome
    samples = torch.tensor([[[5.0], [1.0]]])
    assert mode_shares(samples, outcomes) == (1.0, 0.0)
    with pytest.raises(ValueError, match="coincide"):
        mode_shares(samples[:, :1], outcomes[:, :1])
