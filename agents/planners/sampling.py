"""Sampling-based trajectory optimisers: iCEM and iterated MPPI.

Both evaluate whole populations per objective call, run under ``torch.no_grad()``, and keep an
archive of the best sequences ever evaluated so that ``plan_population`` can hand the top ``k``
to a gradient refiner (``HybridPlanner``).
"""

from __future__ import annotations

import math

import torch
from torch import Generator, Tensor

from agents.planners.base import (
    BoundedPlanner,
    Objective,
    Population,
    merge_top_k,
    randn,
)


def colored_noise(
    beta: float,
    horizon: int,
    shape: tuple[int, ...],
    generator: Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Gaussian noise with power spectrum ``S(f) ~ 1 / f**beta`` along time, unit variance.

    ``beta = 0`` is white noise; larger ``beta`` gives smoother, more temporally correlated
    sequences (iCEM uses ``beta`` around 2-2.5). Built like the ``colorednoise`` package: random
    Fourier coefficients scaled by ``f**(-beta / 2)`` (the lowest frequency cut at ``1 / T``),
    inverse real FFT over time, divided by the exact standard deviation (which, unlike
    ``colorednoise``, counts the DC bin, so the variance is 1 for every ``beta``).

    Args:
        beta: spectral exponent (>= 0).
        horizon: length ``T`` of the time axis.
        shape: shape of the remaining axes, e.g. ``(N, A)``.
        generator: randomness source (its device is used for the draw).
        device: device of the result.
        dtype: dtype of the result.

    Returns:
        ``[T, *shape]`` noise.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    if horizon == 1 or beta == 0.0:
        return randn((horizon, *shape), generator, device, dtype)
    freqs = torch.fft.rfftfreq(horizon, dtype=torch.float64)
    scale = freqs.clamp_min(1.0 / horizon) ** (-beta / 2.0)
    # Exact std of the unnormalised output: irfft's 1/T times the power of every bin, where the
    # bins other than DC (and the even-length Nyquist bin) stand for a conjugate pair.
    multiplicity = torch.full_like(scale, 4.0)
    multiplicity[0] = 2.0
    if horizon % 2 == 0:
        multiplicity[-1] = 2.0
    sigma = torch.sqrt((multiplicity * scale**2).sum()) / horizon
    coeffs = randn((2, *shape, freqs.numel()), generator, device, torch.float64) * scale.to(device)
    real, imag = coeffs[0], coeffs[1]
    # The DC (and even-length Nyquist) coefficients are real; sqrt(2) keeps their power.
    imag[..., 0] = 0.0
    real[..., 0] *= math.sqrt(2.0)
    if horizon % 2 == 0:
        imag[..., -1] = 0.0
        real[..., -1] *= math.sqrt(2.0)
    noise = torch.fft.irfft(torch.complex(real, imag), n=horizon, dim=-1) / sigma.to(device)
    return noise.movedim(-1, 0).to(dtype)


class CEMPlanner(BoundedPlanner):
    """Cross-entropy method with the iCEM improvements (Pinneri et al. 2020).

    Each iteration samples ``mean + std * coloured_noise`` clipped to the box, adds a fraction of
    the previous iteration's elites and the current mean, fits a diagonal Gaussian to the elites
    and moves ``mean`` / ``std`` towards it with momentum. The population shrinks by
    ``population_decay`` per iteration, since later iterations search a narrower distribution.
    The objective is assumed deterministic: kept elites are not re-evaluated, their known cost
    is reused.

    Args (besides the shape and box of ``BoundedPlanner``):
        iterations: CEM iterations.
        population: fresh samples in the first iteration.
        elites: size of the elite set the Gaussian is fitted to.
        population_decay: ``gamma``; iteration ``i`` draws ``population * gamma**-i`` samples.
        min_population: floor of the shrinking population (default ``2 * elites``).
        keep_elites: fraction of the previous iteration's elites carried over.
        beta: coloured-noise exponent (0 = white).
        alpha: momentum: ``mean <- alpha * mean + (1 - alpha) * elite_mean`` (same for ``std``).
        init_std: ``[A]`` or float initial std in action units (default: a quarter of the range).
    """

    def __init__(
        self,
        horizon: int,
        action_low: Tensor | float,
        action_high: Tensor | float,
        action_dim: int | None = None,
        *,
        iterations: int = 5,
        population: int = 256,
        elites: int = 16,
        population_decay: float = 1.25,
        min_population: int | None = None,
        keep_elites: float = 0.3,
        beta: float = 2.0,
        alpha: float = 0.1,
        init_std: Tensor | float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(horizon, action_low, action_high, action_dim, device, dtype)
        self.min_population = 2 * elites if min_population is None else min_population
        if iterations < 1 or elites < 1 or min(population, self.min_population) < elites:
            raise ValueError("need iterations >= 1 and population, min_population >= elites >= 1")
        if population_decay < 1.0 or not 0.0 <= keep_elites <= 1.0 or not 0.0 <= alpha < 1.0:
            raise ValueError("need population_decay >= 1, 0 <= keep_elites <= 1, 0 <= alpha < 1")
        self.iterations = iterations
        self.population = population
        self.elites = elites
        self.population_decay = population_decay
        self.keep_elites = keep_elites
        self.beta = beta
        self.alpha = alpha
        self.init_std = _std(init_std, self)

    @torch.no_grad()
    def _search(
        self, objective: Objective, k: int, start: Tensor, generator: Generator | None
    ) -> Population:
        """The ``k`` best sequences ever evaluated, sorted by cost."""
        mean = start
        std = self.init_std.expand(self._shape).clone()
        n_keep = round(self.keep_elites * self.elites)
        kept: tuple[Tensor, Tensor] | None = None
        archive: tuple[Tensor, Tensor] | None = None
        for i in range(self.iterations):
            n = max(self.min_population, int(self.population / self.population_decay**i))
            noise = colored_noise(
                self.beta, self.horizon, (n, self.action_dim), generator, self.device, self.dtype
            )
            fresh = torch.cat(
                [self._clip(mean.unsqueeze(1) + std.unsqueeze(1) * noise), mean.unsqueeze(1)], dim=1
            )
            fresh_cost = self._evaluate(objective, fresh)
            archive = merge_top_k(archive, fresh, fresh_cost, k)
            elite, elite_cost = merge_top_k(kept, fresh, fresh_cost, self.elites)
            kept = (elite[:, :n_keep], elite_cost[:n_keep])
            # Convex combinations of in-box points, clipped only against rounding.
            mean = self._clip(self.alpha * mean + (1 - self.alpha) * elite.mean(dim=1))
            std = self.alpha * std + (1 - self.alpha) * elite.std(dim=1, unbiased=False)
        assert archive is not None
        return Population(archive[0], archive[1], self.iterations)


class MPPIPlanner(BoundedPlanner):
    """Iterated MPPI: Gaussian perturbations of a nominal sequence, exponentially weighted.

    Each iteration samples ``mean + sigma * noise`` clipped to the box (plus the mean itself),
    weights sample ``j`` by ``softmax(-cost_j / temperature)`` and sets ``mean`` to the weighted
    average (a convex combination of in-box samples, hence inside the box). Candidates
    with non-finite cost get zero weight; if all are non-finite the mean is left unchanged.
    The result is the best of the final weighted mean and the best sample ever evaluated.

    Args (besides the shape and box of ``BoundedPlanner``):
        iterations: MPPI updates of the nominal sequence.
        samples: perturbed sequences per iteration.
        sigma: ``[A]`` or float noise std in action units (default: a quarter of the range).
        temperature: ``lambda`` in cost units; lower is greedier.
        beta: coloured-noise exponent of the perturbations (0 = white, classic MPPI).
    """

    def __init__(
        self,
        horizon: int,
        action_low: Tensor | float,
        action_high: Tensor | float,
        action_dim: int | None = None,
        *,
        iterations: int = 5,
        samples: int = 256,
        sigma: Tensor | float | None = None,
        temperature: float = 1.0,
        beta: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(horizon, action_low, action_high, action_dim, device, dtype)
        if iterations < 1 or samples < 1 or temperature <= 0.0:
            raise ValueError("need iterations >= 1, samples >= 1 and temperature > 0")
        self.iterations = iterations
        self.samples = samples
        self.sigma = _std(sigma, self)
        self.temperature = temperature
        self.beta = beta

    @torch.no_grad()
    def _search(
        self, objective: Objective, k: int, start: Tensor, generator: Generator | None
    ) -> Population:
        """The ``k`` best of all samples and the final weighted mean, sorted by cost."""
        mean = start
        archive: tuple[Tensor, Tensor] | None = None
        for _ in range(self.iterations):
            noise = colored_noise(
                self.beta,
                self.horizon,
                (self.samples, self.action_dim),
                generator,
                self.device,
                self.dtype,
            )
            batch = torch.cat(
                [mean.unsqueeze(1), self._clip(mean.unsqueeze(1) + self.sigma * noise)], dim=1
            )
            cost = self._evaluate(objective, batch)
            archive = merge_top_k(archive, batch, cost, k)
            weights = torch.softmax(-cost / self.temperature, dim=0)
            # A convex combination of in-box samples, clipped only against rounding.
            update = self._clip(torch.einsum("n,tna->ta", weights, batch))
            # All-inf costs give NaN weights; keep the mean rather than poison it (no host sync).
            mean = torch.where(torch.isfinite(weights).all(), update, mean)
        final = mean.unsqueeze(1)
        archive = merge_top_k(archive, final, self._evaluate(objective, final), k)
        return Population(archive[0], archive[1], self.iterations)


def _std(value: Tensor | float | None, planner: BoundedPlanner) -> Tensor:
    """``[A]`` noise scale: given in action units, or a quarter of the action range."""
    if value is None:
        return 0.25 * (planner.action_high - planner.action_low)
    std = torch.as_tensor(value, dtype=planner.dtype).to(planner.device)
    return std.reshape(-1).expand(planner.action_dim).clone()
