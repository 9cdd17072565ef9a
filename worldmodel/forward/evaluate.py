"""How well a forward model predicts held-out episodes: k-step error against the constant
baseline s[t+k] = s[t], and scores of its prior samples (`scoring`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from worldmodel.data.store import EpisodeStore, Window
from worldmodel.forward.model import ForwardModel
from worldmodel.forward.scoring import energy_score, interval_coverage, mode_shares
from worldmodel.types import OutcomesFn


@dataclass(frozen=True)
class KStepError:
    """Mean squared error in state-normalised units after k open-loop steps."""

    k: int  #: steps unrolled from a real start state under the real actions
    model: float  #: the forward model, one rollout with z drawn from the prior
    mean: float  #: the mean of `samples` prior rollouts: the model's point prediction
    baseline: float  #: the constant prediction s[t+k] = s[t]
    windows: int  #: how many start states were averaged


@torch.no_grad()
def normalized_error(model: ForwardModel, predicted: Tensor, target: Tensor) -> Tensor:
    """Squared error in state-normalised units averaged over dims: [..., S] -> [...]."""
    return F.mse_loss(predicted / model.state_std, target / model.state_std, reduction="none").mean(
        -1
    )


def k_step_errors(
    model: ForwardModel,
    store: EpisodeStore,
    ks: tuple[int, ...] = (1, 5, 10, 25),
    max_windows: int = 2048,
    seed: int = 0,
    samples: int = 8,
) -> list[KStepError]:
    """Error of the model and the baseline at each k; a k longer than every episode is skipped.

    Windows are evenly spaced over the valid starts, latents seeded, dropout off: the figure is
    reproducible for a given model and store. A model whose samples spread (a CVAE's spread
    matches its own error, as its energy score asks) errs more with one sample than with its
    predictive mean; `mean` is the second, over `samples` rollouts.
    """
    model.eval()
    results = []
    for k in ks:
        if len(store.window_starts(k)) == 0:
            continue
        window = store.spaced_windows(k, max_windows).to(model.device)
        generator = torch.Generator(device=model.device).manual_seed(seed)
        predicted = model.rollout(window.obs[0], window.action, generator=generator)[-1]
        target = window.obs[k]
        many, _, _ = sampled_rollouts(model, store, k, samples, max_windows, seed + 1)
        results.append(
            KStepError(
                k=k,
                model=normalized_error(model, predicted, target).mean().item(),
                mean=normalized_error(model, many[:, -1].mean(0), target).mean().item(),
                baseline=normalized_error(model, window.obs[0], target).mean().item(),
                windows=window.obs.shape[1],
            )
        )
    return results


@dataclass(frozen=True)
class SampleScores:
    """Scores of k-step predictions sampled with z from the prior (state-normalised units)."""

    k: int  #: steps unrolled from a real start state under the real actions
    energy: float  #: mean energy score on the chosen dims (lower is better)
    energy_full: float  #: mean energy score on the full state
    coverage: float  #: share of real outcomes inside the samples' central 80 % interval
    windows: int  #: how many start states were averaged


@torch.no_grad()
def sampled_rollouts(
    model: ForwardModel, store: EpisodeStore, k: int, samples: int, max_windows: int, seed: int
) -> tuple[Tensor, Tensor, Window]:
    """`samples` k-step rollouts with z from the prior, dropout off, from evenly spaced windows.

    Returns (predicted [samples, k, N, S], real [k, N, S], the windows), in raw units.
    """
    model.eval()
    window = store.spaced_windows(k, max_windows).to(model.device)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    n = window.obs.shape[1]
    s0 = window.obs[0].repeat(samples, 1)
    actions = window.action.repeat(1, samples, 1)
    predicted = model.rollout(s0, actions, generator=generator)  # [k, samples * N, S]
    predicted = predicted.view(k, samples, n, -1).transpose(0, 1)
    return predicted, window.obs[1:], window


def sample_scores(
    model: ForwardModel,
    store: EpisodeStore,
    ks: tuple[int, ...] = (1, 10, 25),
    samples: int = 32,
    dims: tuple[int, ...] = (),
    max_windows: int = 1024,
    seed: int = 0,
) -> list[SampleScores]:
    """Energy score and 80 % interval coverage of prior samples at each k, on `dims` (empty:
    all) and on the full state; a k longer than every episode is skipped.

    A deterministic model's samples coincide, so its energy score is its error norm: the ratio
    of a CVAE's score to it says how much sampling the futures gains over predicting one.
    """
    results = []
    for k in ks:
        if len(store.window_starts(k)) == 0:
            continue
        predicted, real, _ = sampled_rollouts(model, store, k, samples, max_windows, seed)
        pred_n, real_n = predicted[:, -1] / model.state_std, real[-1] / model.state_std
        chosen = list(dims) or list(range(model.state_dim))
        results.append(
            SampleScores(
                k=k,
                energy=energy_score(pred_n[..., chosen], real_n[..., chosen]).mean().item(),
                energy_full=energy_score(pred_n, real_n).mean().item(),
                coverage=interval_coverage(pred_n[..., chosen], real_n[..., chosen]).mean().item(),
                windows=real.shape[1],
            )
        )
    return results


def one_step_mode_shares(
    model: ForwardModel,
    store: EpisodeStore,
    outcomes: OutcomesFn,
    dims: tuple[int, ...] = (),
    samples: int = 32,
    max_windows: int = 1024,
    seed: int = 0,
) -> tuple[float, float]:
    """(share of one-step prior samples at a real outcome, share at the outcomes' mean), on
    `dims` (empty: all), for a task that knows its outcomes (`Task.outcomes`)."""
    predicted, _, window = sampled_rollouts(model, store, 1, samples, max_windows, seed)
    obs, action = window.obs[0].cpu().numpy(), window.action[0].cpu().numpy()
    real = torch.as_tensor(outcomes(obs, action), dtype=predicted.dtype, device=predicted.device)
    chosen = list(dims) or list(range(model.state_dim))
    scale = model.state_std[chosen]
    return mode_shares(predicted[:, 0][..., chosen] / scale, real[..., chosen] / scale)
