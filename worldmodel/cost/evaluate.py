"""How well a cost predicts the rewards of held-out episodes, along the model's k-step
predictions: the error a planner's imagined return inherits from both the model and the cost."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worldmodel.data.store import EpisodeStore
from worldmodel.forward.layers import eval_mode
from worldmodel.forward.model import ForwardModel
from worldmodel.types import CostFn


@dataclass(frozen=True)
class RewardError:
    """Mean squared error of the reward of the k-th step of held-out windows (reward units)."""

    k: int  #: steps unrolled from a real start state under the real actions
    model: float  #: the cost of the model's k-th predicted transition (z from the prior)
    real_states: float  #: the cost of the real k-th transition (the cost's own error)
    baseline: float  #: the reward's variance over the windows (predicting its mean)
    windows: int  #: how many start states were averaged


@torch.no_grad()
def k_step_reward_errors(
    model: ForwardModel,
    cost: CostFn,
    store: EpisodeStore,
    ks: tuple[int, ...] = (1, 5, 10, 25),
    max_windows: int = 2048,
    seed: int = 0,
) -> list[RewardError]:
    """`RewardError` at each k (a k longer than every episode is skipped): windows evenly spaced,
    latents seeded, dropout off, so the figures are reproducible for a model, cost and store."""
    results = []
    device = model.state_mean.device
    with eval_mode(model):
        for k in ks:
            if len(store.window_starts(k)) == 0:
                continue
            window = store.spaced_windows(k, max_windows).to(device)
            generator = torch.Generator(device=device).manual_seed(seed)
            states = model.rollout(window.obs[0], window.action, generator=generator)
            before = window.obs[0] if k == 1 else states[-2]
            reward = window.reward[-1]
            predicted = -cost(before, window.action[-1], states[-1])
            on_real = -cost(window.obs[k - 1], window.action[-1], window.obs[k])
            results.append(
                RewardError(
                    k=k,
                    model=(predicted - reward).square().mean().item(),
                    real_states=(on_real - reward).square().mean().item(),
                    baseline=reward.var(unbiased=False).item(),
                    windows=reward.shape[0],
                )
            )
    return results
