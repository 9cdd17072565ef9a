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


def test_mode_shares_count_each_sample_by_its_own_distances() -> None:
    # asymmetric modes at 0 and 4 on dim 0 (dim 1 constant): separation 4, radius 1
    outcomes = torch.tensor([[[0.0, 2.0]], [[4.0, 2.0]]])  # [M=2, N=1, D=2]
    on_boundary = torch.tensor([[[1.0, 2.0]], [[3.0, 2.0]], [[2.0, 2.0]], [[8.0, 2.0]]])
    # 1.0 and 3.0 lie exactly 1 from a mode and from the mean 2 (both counted), 2.0 on the mean
    assert mode_shares(on_boundary, outcomes) == (0.5, 0.75)


def test_mode_shares_keep_close_modes_and_leave_out_only_coinciding_ones() -> None:
    outcomes = torch.tensor(
        [[[0.0], [0.0], [5.0]], [[0.2], [1e-6], [5.0]]], dtype=torch.float64
    )  # separations 0.2, 1e-6 (left out) and 0 (left out)
    samples = torch.tensor([[[0.2], [0.0], [5.0]], [[0.1], [0.0], [5.0]]], dtype=torch.float64)
    assert mode_shares(samples, outcomes) == (0.5, 0.5)


def test_mode_shares_say_when_no_transition_has_modes() -> None:
    outcomes = torch.zeros(2, 3, 1)
    message = "^mode_shares: every transition's outcomes coincide; there are no modes$"
    with pytest.raises(ValueError, match=message):
        mode_shares(torch.zeros(4, 3, 1), outcomes)
    with pytest.raises(ValueError, match="^mode_shares needs at least two possible outcomes"):
        mode_shares(torch.zeros(4, 3, 1), outcomes[:1])


def _brute_energy(samples: list[list[list[float]]], target: list[list[float]]) -> list[float]:
    """E|X - y| - sum_{i != j} |X_i - X_j| / (2 K (K - 1)), written out with loops."""
    k, scores = len(samples), []
    for n, y in enumerate(target):
        x = [s[n] for s in samples]
        error = sum(math.dist(xi, y) for xi in x) / k
        spread = sum(
            math.dist(xi, xj) for i, xi in enumerate(x) for j, xj in enumerate(x) if i != j
        )
        scores.append(error - spread / (2 * k * (k - 1)))
    return scores


@pytest.mark.parametrize("k", [2, 3, 5])
def test_energy_score_equals_the_fair_formula_on_asymmetric_samples(k: int) -> None:
    """Samples away from the target and not symmetric about it (so the sign of an error or a
    spread matters): the score is the fair estimate, computed by hand, per transition."""
    g = torch.Generator().manual_seed(k)
    samples = 1.0 + torch.rand(k, 3, 2, generator=g, dtype=torch.float64) * torch.arange(1.0, 3.0)
    target = torch.tensor([[0.5, 2.0], [3.0, -1.0], [1.2, 1.7]], dtype=torch.float64)
    expected = _brute_energy(samples.tolist(), target.tolist())
    torch.testing.assert_close(energy_score(samples, target), torch.tensor(expected).double())


def test_energy_score_of_two_samples_by_hand() -> None:
    """Samples 1 and 3 for a target 0: (1 + 3) / 2 - 2 / 2 = 1."""
    samples = torch.tensor([[[1.0]], [[3.0]]])
    assert energy_score(samples, torch.zeros(1, 1)).item() == pytest.approx(1.0)


def test_interval_coverage_at_known_quantiles() -> None:
    """Samples 0, 1, ..., 10 (and 10 more on dim 1): the central 80 % interval is [1, 9] (on
    dim 1, [11, 19]), both ends included, so 1, 9, 5 and 2.4 of the 6 targets are in it; level
    0.5 gives [2.5, 7.5]. Per dim, over targets."""
    grid = torch.arange(11.0)
    samples = torch.stack([grid, grid + 10], -1)[:, None].expand(11, 6, 2)  # [K=11, N=6, D=2]
    inside = torch.tensor([1.0, 9.0, 5.0, 0.99, 9.01, 2.4])
    target = torch.stack([inside, inside + 10], -1)  # [N, D]
    torch.testing.assert_close(interval_coverage(samples, target), torch.tensor([2 / 3, 2 / 3]))
    half = interval_coverage(samples, target, level=0.5)
    torch.testing.assert_close(half, torch.tensor([1 / 6, 1 / 6]))  # only 5.0 lies in [2.5, 7.5]
    mixed = torch.stack([inside, inside], -1)  # dim 1 targets below dim 1's interval
    torch.testing.assert_close(interval_coverage(samples, mixed), torch.tensor([2 / 3, 0.0]))


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5])
def test_interval_coverage_refuses_every_level_outside_the_open_interval(level: float) -> None:
    """Both ends of (0, 1) are refused, with the level in the message."""
    with pytest.raises(ValueError, match=rf"^level must be in \(0, 1\), got {level}$"):
        interval_coverage(torch.zeros(2, 1, 1), torch.zeros(1, 1), level=level)


def test_mode_shares_measure_from_each_transitions_own_outcomes_and_their_mean() -> None:
    """Modes away from the origin, different per transition: (0, 5) and (2, 5) with mean (1, 5),
    and (10, -3) and (10, 1) with mean (10, -1). A sample at a transition's mean, or on one of
    its modes, counts there and nowhere else; the same points given to the other transition
    count at neither."""
    outcomes = torch.tensor([[[0.0, 5.0], [10.0, -3.0]], [[2.0, 5.0], [10.0, 1.0]]])
    at_mean = torch.tensor([[[1.0, 5.0], [10.0, -1.0]]])
    on_mode = torch.tensor([[[2.0, 5.0], [10.0, -3.0]], [[0.0, 5.0], [10.0, 1.0]]])
    swapped = at_mean.flip(1)
    assert mode_shares(at_mean, outcomes) == (0.0, 1.0)
    assert mode_shares(on_mode, outcomes) == (1.0, 0.0)
    assert mode_shares(swapped, outcomes) == (0.0, 0.0)
