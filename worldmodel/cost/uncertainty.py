"""PPUU's uncertainty cost: how far a trajectory leaves what the world model has seen.

The planner and the policy learner both pay it through `TrajectoryCost`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from worldmodel.data.store import EpisodeStore, Window
from worldmodel.forward.layers import eval_mode
from worldmodel.forward.model import ForwardModel

Metrics = dict[str, float]


class UncertaintyPenalty:
    """PPUU's uncertainty cost: hinge on the model's epistemic uncertainty, in units of data.

    U[t] is the variance of the model's predictions over `masks` dropout masks (summed over the
    normalised state dims, `ForwardModel.uncertainty`). Its scale depends on the model, the task and
    the step t (variance compounds along a rollout), so a raw weight would not transfer. As in PPUU
    (`estimate_uncertainty_stats` in their code) we measure U on real data -- the model unrolled
    from real s[0] under the actions actually taken -- and normalise by its mean and std there,
    here per step t. The penalty relu((U - mean[t]) / std[t] - threshold) is then about zero on
    trajectories like those in the data and grows linearly once the policy leaves them; the hinge
    lets the policy use all the certainty the data gives, rather than seek ever lower variance.

    Recalibrate after each refit of the model: its uncertainty changes with the data.
    """

    def __init__(self, model: ForwardModel, masks: int = 8, threshold: float = 1.0) -> None:
        if masks < 2:
            raise ValueError(f"masks must be >= 2 to estimate a variance, got {masks}")
        self.model, self.masks, self.threshold = model, masks, threshold
        self.mean: Tensor | None = None  # [T] per-step mean of U on real rollouts
        self.std: Tensor | None = None  # [T]

    @property
    def horizon(self) -> int:
        """Longest rollout the calibration covers (0 before `calibrate`)."""
        return 0 if self.mean is None else self.mean.shape[0]

    def raw(self, s0: Tensor, actions: Tensor, z: Tensor | None = None) -> Tensor:
        """U: s0 [B, S], actions [T, B, A], z [T, B, Z] (None: prior) -> [T, B], differentiable.

        As in PPUU: the actions are replayed open loop under each dropout mask (the rest of the
        model in eval mode), so U measures how much the model's own futures disagree.
        """
        with eval_mode(self.model):
            return self.model.uncertainty(s0, actions, self.masks, z)

    @torch.no_grad()
    def calibrate(self, window: Window, generator: torch.Generator | None = None) -> Metrics:
        """Measure U on real windows (obs [H+1, B, S], action [H, B, A]); H >= the policy horizon.

        Use a few hundred windows: the std must be estimated, not guessed.
        """
        window = window.to(self.model.device)
        z = self.model.sample_prior(*window.action.shape[:2], generator=generator)
        u = self.raw(window.obs[0], window.action, z)
        mean = u.mean(1)
        std = u.std(1).clamp_min(1e-6 * mean.abs().max().item() + 1e-12)
        if self.mean is not None and self.std is not None and self.mean.shape == mean.shape:
            # in place: a planner captured as a CUDA graph (agents/planners/graphed) reads
            # these tensors' memory, and would replay the first calibration forever
            self.mean.copy_(mean)
            self.std.copy_(std)
        else:
            self.mean, self.std = mean, std
        return {"mean": self.mean.mean().item(), "std": self.std.mean().item()}

    def calibrate_from(
        self, store: EpisodeStore, horizon: int, rng: np.random.Generator, windows: int = 512
    ) -> bool:
        """`calibrate` on `windows` real windows of `horizon` steps drawn from `store`.

        False (and uncalibrated) where no episode of `store` is that long yet.
        """
        if len(store.window_starts(horizon)) == 0:
            return False
        self.calibrate(store.sample(windows, horizon, rng))
        return True

    def normalized(self, u: Tensor) -> Tensor:
        """U [T, B] -> (U - mean[t]) / std[t], [T, B]."""
        if self.mean is None or self.std is None:
            raise RuntimeError("UncertaintyPenalty used before calibrate(); calibrate on real data")
        if u.shape[0] > self.horizon:
            raise ValueError(
                f"rollout of {u.shape[0]} steps but calibrated on {self.horizon}; "
                "calibrate with windows at least as long as the policy horizon"
            )
        horizon = u.shape[0]
        return (u - self.mean[:horizon, None]) / self.std[:horizon, None]

    def __call__(self, u: Tensor) -> Tensor:
        """Hinge penalty [T, B] from U [T, B] (see class doc)."""
        return torch.relu(self.normalized(u) - self.threshold)
