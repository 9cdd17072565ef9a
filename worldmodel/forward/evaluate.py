"""k-step prediction error of a forward model against the constant baseline s[t+k] = s[t]."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worldmodel.data.store import EpisodeStore
from worldmodel.forward.model import ForwardModel, normalized_error


@dataclass(frozen=True)
class KStepError:
    """Mean squared error in state-normalised units after k open-loop steps."""

    k: int  #: steps unrolled from a real start state under the real actions
    model: float  #: the forward model, z drawn from the prior
    baseline: float  #: the constant prediction s[t+k] = s[t]
    windows: int  #: how many start states were averaged


@torch.no_grad()
def k_step_errors(
    model: ForwardModel,
    store: EpisodeStore,
    ks: tuple[int, ...] = (1, 5, 10, 25),
    max_windows: int = 2048,
    seed: int = 0,
) -> list[KStepError]:
    """Error of the model and the baseline at each k; a k longer than every episode is skipped.

    Windows are evenly spaced over the valid starts, latents seeded, dropout off: the figure is
    reproducible for a given model and store.
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
        results.append(
            KStepError(
                k=k,
                model=normalized_error(model, predicted, target).mean().item(),
                baseline=normalized_error(model, window.obs[0], target).mean().item(),
                windows=window.obs.shape[1],
            )
        )
    return results
