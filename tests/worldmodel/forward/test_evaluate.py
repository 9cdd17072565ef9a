"""Evaluation of a forward model on held-out episodes, against models whose answer is known.

The models here are not trained: `DriftModel` is the data's own dynamics s' = s + a plus a known
Gaussian spread, `LedgeModel` is GustyLedge's exact dynamics with a gust that a latent picks.
Every figure is then a closed form or a brute-force recomputation from the model's own draws.
"""

import numpy as np
import pytest
import torch
from torch import Generator, Tensor

from envs.stochastic import LEDGE_DT, LEDGE_GAIN, LEDGE_GUST, gusty_ledge_outcomes
from worldmodel.data.store import EpisodeStore, Stats
from worldmodel.forward.evaluate import (
    k_step_errors,
    one_step_mode_shares,
    sample_scores,
    sampled_rollouts,
)
from worldmodel.forward.layers import NormalizedModel


class DriftModel(NormalizedModel):
    """s' = s + a + noise * z, z ~ N(0, I) per step: noise 0 is the data's exact dynamics."""

    def __init__(self, noise: list[float], state_std: list[float] | None = None) -> None:
        super().__init__(len(noise))
        self.state_dim = self.latent_dim = len(noise)
        self.noise = torch.tensor(noise)
        if state_std is not None:
            ones = torch.ones(self.state_dim)
            self.set_normalization(Stats(0 * ones, torch.tensor(state_std), 0 * ones, ones))

    def rollout(
        self,
        s0: Tensor,
        actions: Tensor,
        z: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        if z is None:
            z = self.sample_prior(*actions.shape[:-1], generator=generator)
        states, s = [], s0
        for a, z_t in zip(actions, z, strict=True):
            s = s + a + self.noise * z_t
            states.append(s)
        return torch.stack(states)


def drift_store(lengths: tuple[int, ...], seed: int = 0) -> EpisodeStore:
    """Episodes of s' = s + a (float32, as the model computes it), 2-D states and actions."""
    rng = np.random.default_rng(seed)
    store = EpisodeStore(obs_dim=2, act_dim=2)
    for n in lengths:
        action = rng.normal(size=(n, 2)).astype(np.float32)
        obs = [rng.normal(size=2).astype(np.float32)]
        for a in action:
            obs.append(obs[-1] + a)
        obs = np.stack(obs)
        store.add_episode(obs[:-1], action, np.zeros(n), obs[1:], np.zeros(n), np.zeros(n))
    return store


def drift_noise(model: DriftModel, k: int, samples: int, n: int, seed: int) -> Tensor:
    """The summed noise [samples, n, S] after k steps of `sample_scores`' rollouts: the model
    draws z [k, samples * n, S] with one generator, sample j of window i in row j * n + i."""
    z = torch.randn(k, samples * n, model.state_dim, generator=Generator().manual_seed(seed))
    return (model.noise * z).sum(0).view(samples, n, -1)


def brute_energy(samples: np.ndarray, target: np.ndarray) -> float:
    """Mean over windows of the fair energy score, written out: samples [K, N, D], target [N, D]."""
    k, n = samples.shape[:2]
    scores = []
    for i in range(n):
        x = samples[:, i].astype(np.float64)  # [K, D]
        error = np.linalg.norm(x - target[i], axis=-1).mean()
        spread = np.linalg.norm(x[:, None] - x[None], axis=-1).sum()  # over all K x K pairs
        scores.append(error - spread / (2 * k * (k - 1)))
    return float(np.mean(scores))


def brute_coverage(samples: np.ndarray, target: np.ndarray) -> float:
    """Share of targets inside each window's 10 %..90 % sample quantiles (numpy's linear)."""
    low, high = np.quantile(samples, 0.1, axis=0), np.quantile(samples, 0.9, axis=0)
    return float(((target >= low) & (target <= high)).mean())


def test_k_step_error_of_the_exact_model_is_zero_and_the_baseline_the_summed_actions() -> None:
    """The data's own dynamics err by 0 at every k; s[t+k] = s[t] errs by the mean squared sum
    of the k actions in state-normalised units, over every valid start; a k longer than every
    episode is left out, the others keep their order."""
    store, std = drift_store((12, 9)), np.array([2.0, 0.5])
    model = DriftModel([0.0, 0.0], state_std=std.tolist())
    model.train()
    results = k_step_errors(model, store, ks=(3, 20, 1, 9))
    assert not model.training
    assert [r.k for r in results] == [3, 1, 9]
    data = store.data
    for r in results:
        last = len(store) - r.k + 1
        starts = [s for s in range(last) if data["episode"][s] == data["episode"][s + r.k - 1]]
        summed = np.stack([data["action"][s : s + r.k].sum(0) for s in starts])
        assert r.windows == len(starts) == 12 + 9 - 2 * (r.k - 1)
        assert r.model == 0.0
        assert r.baseline == pytest.approx(np.mean((summed / std) ** 2), rel=1e-5)


def test_k_step_error_of_a_noisy_model_is_its_seeded_summed_noise() -> None:
    """With noise sigma the k-step error is the mean squared sum of the model's own k draws,
    seeded by `seed` (0 by default); at most `max_windows` evenly spaced windows are used."""
    store, model = drift_store((30,)), DriftModel([0.5, 0.2])
    (default,) = k_step_errors(model, store, ks=(4,))
    (seeded,) = k_step_errors(model, store, ks=(4,), seed=3)
    for result, seed in ((default, 0), (seeded, 3)):
        noise = drift_noise(model, 4, 1, 27, seed)[0]
        assert result.model == pytest.approx(noise.square().mean().item(), rel=1e-5)
    assert default.model != seeded.model
    (few,) = k_step_errors(model, store, ks=(4,), max_windows=5)
    assert few.windows == 5


def test_the_mean_error_is_that_of_the_average_of_samples_seeded_draws() -> None:
    """`mean` is the error of the average of `samples` rollouts (8 by default) drawn with seed
    + 1: the averaged noise, so a spread model errs far less by its mean than by one sample."""
    store, model = drift_store((30,)), DriftModel([0.5, 0.2])
    (default,) = k_step_errors(model, store, ks=(4,))
    (three,) = k_step_errors(model, store, ks=(4,), seed=5, samples=3)
    for result, samples, seed in ((default, 8, 0), (three, 3, 5)):
        averaged = drift_noise(model, 4, samples, 27, seed + 1).mean(0)
        assert result.mean == pytest.approx(averaged.square().mean().item(), rel=1e-5)
    assert default.mean < default.model / 4
    (exact,) = k_step_errors(DriftModel([0.0, 0.0]), store, ks=(4,))
    assert exact.mean == pytest.approx(0.0, abs=1e-12)


def test_k_step_errors_default_to_k_1_5_10_25_on_at_most_2048_windows() -> None:
    """The defaults, read off what the function returns on a store of 2,100 steps."""
    results = k_step_errors(DriftModel([0.0, 0.0]), drift_store((2100,)))
    assert [(r.k, r.windows) for r in results] == [(1, 2048), (5, 2048), (10, 2048), (25, 2048)]


def test_sampled_rollouts_are_the_models_draws_per_sample_step_and_window() -> None:
    """predicted[j, t, i] is window i's real state after t + 1 steps plus sample j's summed
    noise; real is the windows' states s[1..k] [k, N, S]; the model is left in eval mode."""
    store, model = drift_store((12, 9)), DriftModel([0.5, 0.2])
    model.train()
    predicted, real, window = sampled_rollouts(model, store, 3, samples=4, max_windows=8, seed=1)
    assert not model.training
    assert (predicted.shape, real.shape) == ((4, 3, 8, 2), (3, 8, 2))
    torch.testing.assert_close(real, window.obs[1:], rtol=0, atol=0)
    z = torch.randn(3, 4 * 8, 2, generator=Generator().manual_seed(1)).view(3, 4, 8, 2)
    noise = (model.noise * z).cumsum(0).transpose(0, 1)  # [samples, k, N, S]
    torch.testing.assert_close(predicted, real + noise)


def test_sample_scores_of_the_exact_model_are_a_perfect_score() -> None:
    """Samples of the exact dynamics all equal the real state: energy 0 on any dims, every
    target covered; a k longer than every episode is left out."""
    store = drift_store((12, 9))
    results = sample_scores(DriftModel([0.0, 0.0], [2.0, 0.5]), store, ks=(3, 20, 2), samples=4)
    assert [(r.k, r.windows) for r in results] == [(3, 17), (2, 19)]
    for r in results:
        assert (r.energy, r.energy_full, r.coverage) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("dims", [(0,), (1,), ()])
def test_sample_scores_are_the_scores_of_the_models_own_samples(dims: tuple[int, ...]) -> None:
    """Energy score (on `dims`, empty: all, and on the full state) and 80 % coverage of the
    k-step samples equal a brute-force recomputation from the model's seeded draws, in
    state-normalised units; samples 32, windows 1024 and seed 0 by default."""
    store, std = drift_store((1030,)), torch.tensor([2.0, 0.5])
    model = DriftModel([0.6, 0.1], state_std=std.tolist())
    (result,) = sample_scores(model, store, ks=(2,), dims=dims)
    (few,) = sample_scores(model, store, ks=(2,), dims=dims, max_windows=64)
    assert (result.windows, few.windows) == (1024, 64)
    chosen = list(dims) or [0, 1]
    for r in (result, few):
        window = store.spaced_windows(2, r.windows)
        real = (window.obs[2] / std).numpy()  # [N, S]
        samples = ((window.obs[2] + drift_noise(model, 2, 32, r.windows, seed=0)) / std).numpy()
        cover = brute_coverage(samples[..., chosen], real[..., chosen])
        assert r.coverage == pytest.approx(cover, abs=1e-6)
    assert few.energy == pytest.approx(brute_energy(samples[..., chosen], real[..., chosen]), 1e-4)
    assert few.energy_full == pytest.approx(brute_energy(samples, real), rel=1e-4)


def test_sample_scores_energy_is_the_closed_form_gaussian_crps() -> None:
    """In 1-D with the real state at the samples' mean, the energy score of N(0, k sigma^2)
    samples is sigma sqrt(k) (2 phi(0) - 1/sqrt(pi)) in normalised units (within 2 %: 1024
    windows of 32 samples), and it grows as sqrt(k)."""
    model = DriftModel([0.6, 0.0], state_std=[2.0, 1.0])
    results = sample_scores(model, drift_store((1030,)), ks=(1, 4), dims=(0,))
    per_unit = 0.6 / 2.0 * (2 / np.sqrt(2 * np.pi) - 1 / np.sqrt(np.pi))
    for r in results:
        assert r.energy == pytest.approx(per_unit * np.sqrt(r.k), rel=0.02)
        assert r.energy_full == pytest.approx(r.energy, rel=1e-5)  # dim 1 is exact


def test_sample_scores_default_to_k_1_10_25() -> None:
    """The default ks, read off the results."""
    results = sample_scores(DriftModel([0.0, 0.0]), drift_store((40,)), samples=2)
    assert [(r.k, r.windows) for r in results] == [(1, 40), (10, 31), (25, 16)]


class LedgeModel(NormalizedModel):
    """GustyLedge's exact dynamics; the gust is +-gust by the sign of z where |z| < cut (else
    none: the mean), and the velocity is off by `velocity_error`."""

    def __init__(
        self, gust: float, cut: float = np.inf, velocity_error: float = 0.0, std: float = 1.0
    ) -> None:
        super().__init__(2)
        self.state_dim, self.latent_dim = 2, 1
        self.gust, self.cut, self.velocity_error = gust, cut, velocity_error
        ones = torch.ones(2)
        self.set_normalization(Stats(0 * ones, torch.tensor([1.0, std]), 0 * ones, ones))

    def rollout(
        self,
        s0: Tensor,
        actions: Tensor,
        z: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        if z is None:
            z = self.sample_prior(*actions.shape[:-1], generator=generator)
        states, (p, v) = [], s0.double().unbind(-1)
        for a, z_t in zip(actions.double(), z.double(), strict=True):
            v = (1 - LEDGE_GAIN) * v + LEDGE_GAIN * a[:, 0].clamp(-1, 1)
            gust = self.gust * z_t[:, 0].sign() * (z_t[:, 0].abs() < self.cut)
            p = p + LEDGE_DT * v + gust
            states.append(torch.stack([p, v + self.velocity_error], -1))
        return torch.stack(states).float()


def ledge_store(steps: int, length: int = 100, seed: int = 0) -> EpisodeStore:
    """Episodes of `length` GustyLedge steps under random actions, from its exact outcomes."""
    rng, store = np.random.default_rng(seed), EpisodeStore(obs_dim=2, act_dim=1)
    for _ in range(steps // length):
        obs, action = [np.array([rng.uniform(-1, 0.5), 0.0])], rng.uniform(-1, 1, (length, 1))
        for a in action:
            obs.append(gusty_ledge_outcomes(obs[-1], a)[rng.integers(2)])
        obs, zeros = np.stack(obs), np.zeros(length)
        store.add_episode(obs[:-1], action, zeros, obs[1:], zeros, zeros)
    return store


def test_one_step_mode_shares_of_the_exact_sampler_and_of_the_mean() -> None:
    """Against GustyLedge's real outcomes, its exact dynamics with a gust put every sample on
    an outcome (1, 0); without a gust, every sample on their mean (0, 1)."""
    store = ledge_store(300)
    shares = one_step_mode_shares(LedgeModel(LEDGE_GUST), store, gusty_ledge_outcomes, samples=4)
    assert shares == (1.0, 0.0)
    shares = one_step_mode_shares(LedgeModel(0.0), store, gusty_ledge_outcomes, samples=4)
    assert shares == (0.0, 1.0)


def test_one_step_mode_shares_are_on_the_chosen_dims_in_normalised_units() -> None:
    """A velocity off by 0.03 is within the radius (0.25 x the 0.2 gap) in raw units but 0.3
    away once divided by a velocity std of 0.1: on all dims the samples are at neither the
    outcomes nor their mean, on the position alone they are at an outcome. Without the error
    they are at an outcome whatever the std."""
    store = ledge_store(200)
    off = LedgeModel(LEDGE_GUST, velocity_error=0.03, std=0.1)
    assert one_step_mode_shares(off, store, gusty_ledge_outcomes, samples=4) == (0.0, 0.0)
    assert one_step_mode_shares(off, store, gusty_ledge_outcomes, (0,), samples=4) == (1.0, 0.0)
    raw = LedgeModel(LEDGE_GUST, velocity_error=0.03, std=1.0)
    assert one_step_mode_shares(raw, store, gusty_ledge_outcomes, samples=4) == (1.0, 0.0)
    exact = LedgeModel(LEDGE_GUST, std=0.1)  # samples and outcomes scaled alike
    assert one_step_mode_shares(exact, store, gusty_ledge_outcomes, samples=4) == (1.0, 0.0)


def test_one_step_mode_shares_count_the_models_seeded_samples() -> None:
    """A sampler that gusts only where |z| < 1 (else it predicts the mean) scores the share of
    its own draws below 1 at the outcomes and the rest at the mean: 32 samples of 1024
    windows, seed 0 by default."""
    store, model = ledge_store(1100), LedgeModel(LEDGE_GUST, cut=1.0)
    for kwargs, samples, seed in (({}, 32, 0), ({"samples": 5, "seed": 2}, 5, 2)):
        z = torch.randn(1, samples * 1024, 1, generator=Generator().manual_seed(seed))
        inside = (z.abs() < 1).double().mean().item()
        shares = one_step_mode_shares(model, store, gusty_ledge_outcomes, **kwargs)
        assert shares == pytest.approx((inside, 1 - inside), abs=1e-6)
    assert len(store.spaced_windows(1, 1024).obs[0]) == 1024


def test_one_step_mode_shares_use_every_transition_even_an_episodes_last() -> None:
    """On episodes of one step each, every transition is a one-step window: the exact sampler
    is at an outcome on all of them."""
    store = ledge_store(50, length=1)
    shares = one_step_mode_shares(LedgeModel(LEDGE_GUST), store, gusty_ledge_outcomes, samples=2)
    assert shares == (1.0, 0.0)
