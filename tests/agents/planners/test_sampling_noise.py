"""Coloured noise with known answers: each draw is an explicit cosine sum of the generator's
Gaussian coefficients scaled by max(f, 1/T)**(-beta/2), DC and Nyquist real with their power kept,
divided by its exact standard deviation; its average power spectrum falls as f**-beta."""

from __future__ import annotations

import math

import pytest
import torch
from planner_problems import gen
from torch import Tensor

from agents.planners.sampling import colored_noise


def cosine_sum_noise(beta: float, horizon: int, draws: Tensor) -> Tensor:
    """``[T, M]`` noise from ``[2, M, F]`` Gaussian draws (real and imaginary parts), written as
    the real Fourier series sum_k w_k (a_k cos(2 pi k t / T) - b_k sin(2 pi k t / T)), without
    an FFT, then divided by the exact std of that linear map of unit Gaussians."""
    n_bins = horizon // 2 + 1
    k = torch.arange(n_bins, dtype=torch.float64)
    scale = torch.clamp(k / horizon, min=1.0 / horizon) ** (-beta / 2.0)
    a, b = draws[0] * scale, draws[1] * scale
    # Bins that are their own conjugate (DC; Nyquist for even T) are real: sqrt(2) keeps their
    # power. Every other bin stands for a conjugate pair, hence weight 2 in the series.
    real_bins = [0] + ([n_bins - 1] if horizon % 2 == 0 else [])
    weight = torch.full((n_bins,), 2.0, dtype=torch.float64)
    for j in real_bins:
        a[:, j] *= math.sqrt(2.0)
        b[:, j] = 0.0
        weight[j] = 1.0
    t = torch.arange(horizon, dtype=torch.float64)
    phase = 2.0 * math.pi * t[:, None] * k[None, :] / horizon  # [T, F]
    raw = weight * (a[None] * torch.cos(phase)[:, None] - b[None] * torch.sin(phase)[:, None])
    raw = raw.sum(-1) / horizon  # [T, M]
    # Each a_k, b_k is scale_k times a unit Gaussian: the variance of x_t is the sum of the
    # squared coefficients; cos^2 + sin^2 = 1 makes it the same for every t.
    coeff_sq = (weight * scale / horizon) ** 2
    coeff_sq[real_bins] *= 2.0
    return raw / coeff_sq.sum().sqrt()


@pytest.mark.parametrize("horizon", [3, 5, 8, 9])
@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_colored_noise_is_the_cosine_series_of_the_generators_draws(
    beta: float, horizon: int
) -> None:
    """Two calls in a row on one generator: each is the cosine series of the next [2, M, F]
    float64 normal draws of that generator (so also exactly that many draws are consumed)."""
    shape, n_bins = (3, 2), horizon // 2 + 1
    g = gen(7)
    first = colored_noise(beta, horizon, shape, generator=g, dtype=torch.float64)
    second = colored_noise(beta, horizon, shape, generator=g, dtype=torch.float64)
    ref_gen = gen(7)
    for got in (first, second):
        draws = torch.randn(2, 6, n_bins, generator=ref_gen, dtype=torch.float64)
        expected = cosine_sum_noise(beta, horizon, draws).reshape(horizon, *shape)
        assert got.shape == (horizon, *shape) and got.dtype == torch.float64
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_horizon_two_is_the_hadamard_rotation_of_two_draws() -> None:
    """At T = 2 both bins (DC, Nyquist) are real and clamped to f = 1/2, so the noise is white:
    x_0 = (r_0 + r_1) / sqrt(2), x_1 = (r_0 - r_1) / sqrt(2) of the generator's draws r."""
    got = colored_noise(2.0, 2, (4,), generator=gen(3), dtype=torch.float64)
    r = torch.randn(2, 4, 2, generator=gen(3), dtype=torch.float64)[0]  # [M, F]
    expected = torch.stack([r[:, 0] + r[:, 1], r[:, 0] - r[:, 1]]) / math.sqrt(2.0)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_white_noise_and_horizon_one_are_the_generators_normal_draws() -> None:
    """beta = 0 (any T) and T = 1 (any beta) draw randn in the requested dtype directly."""
    torch.testing.assert_close(
        colored_noise(0.0, 6, (5, 2), generator=gen(4)),
        torch.randn(6, 5, 2, generator=gen(4)),
        rtol=0, atol=0,
    )  # fmt: skip
    torch.testing.assert_close(
        colored_noise(2.0, 1, (5,), generator=gen(4)),
        torch.randn(1, 5, generator=gen(4)),
        rtol=0, atol=0,
    )  # fmt: skip


def test_power_spectrum_falls_as_f_to_the_minus_beta_with_dc_and_nyquist_at_the_floor() -> None:
    """Over 4,000 seeded draws of T = 16: the mean power of bin k, DC and Nyquist included, is
    proportional to max(k/T, 1/T)**-beta (each bin within 10% of it), and every time step has
    unit variance (within 0.09, about 4 standard errors)."""
    beta, horizon = 2.0, 16
    noise = colored_noise(beta, horizon, (4000,), generator=gen(11), dtype=torch.float64)
    power = torch.fft.rfft(noise, dim=0).abs().pow(2).mean(dim=1)  # [F]
    k = torch.arange(horizon // 2 + 1, dtype=torch.float64)
    shape = torch.clamp(k / horizon, min=1.0 / horizon) ** -beta
    # The DC and Nyquist bins are real draws with sqrt(2) applied: the same power per bin.
    ratio = power / shape
    torch.testing.assert_close(ratio / ratio.mean(), torch.ones_like(ratio), rtol=0, atol=0.1)
    torch.testing.assert_close(noise.var(dim=1), torch.ones(horizon, dtype=torch.float64),
                               rtol=0, atol=0.09)  # fmt: skip


@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_colored_noise_lands_on_the_requested_device_from_a_cpu_generator(beta: float) -> None:
    """The meta device stands in for an accelerator: drawn on the generator's CPU, moved."""
    noise = colored_noise(beta, 8, (3, 2), generator=gen(), device="meta")
    assert noise.device == torch.device("meta") and noise.shape == (8, 3, 2)
    assert colored_noise(beta, 8, (3,), generator=gen()).device == torch.device("cpu")
