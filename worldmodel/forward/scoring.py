"""Scores of sampled predictions against what happened: energy score, interval coverage, modes.

A model that samples futures is judged on its samples, not their mean: the energy score is a
proper scoring rule (least in expectation when the samples are distributed as the outcomes), the
coverage of central intervals says whether their spread is calibrated, and where a task knows
its possible outcomes (`Task.outcomes`) the share of samples on one, and between them, says
whether the modes are there or blurred into their mean.
"""

from __future__ import annotations

import torch
from torch import Tensor


def energy_score(samples: Tensor, target: Tensor) -> Tensor:
    """Energy score [N] of samples [K, N, D] for targets [N, D], the unbiased (fair) estimate.

    ES = E|X - y| - E|X - X'| / 2 with X, X' independent samples; with K = 1 it is the error norm
    of the one sample (a deterministic prediction's score). Lower is better.
    """
    k = samples.shape[0]
    error = torch.linalg.vector_norm(samples - target, dim=-1).mean(0)
    if k == 1:
        return error
    spread = torch.linalg.vector_norm(samples[:, None] - samples[None], dim=-1).sum((0, 1))
    return error - spread / (2 * k * (k - 1))


def interval_coverage(samples: Tensor, target: Tensor, level: float = 0.8) -> Tensor:
    """Share [D] of targets [N, D] inside the central `level` interval of samples [K, N, D].

    Calibrated samples cover `level` of the targets; fewer means the spread is too narrow.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1.0 - level) / 2
    low = torch.quantile(samples, tail, dim=0)
    high = torch.quantile(samples, 1.0 - tail, dim=0)
    return ((target >= low) & (target <= high)).float().mean(0)


def mode_shares(samples: Tensor, outcomes: Tensor, tolerance: float = 0.25) -> tuple[float, float]:
    """(share of samples at a real outcome, share at the outcomes' mean) of samples [K, N, D]
    given the possible outcomes [M, N, D] of each of the N transitions.

    "At" is within `tolerance` times the least distance between two outcomes of that transition;
    transitions whose outcomes coincide (closer than 1e-6) are left out. A sampler of the modes
    scores (1, 0); one that predicts their mean scores (0, 1).
    """
    if outcomes.shape[0] < 2:
        raise ValueError("mode_shares needs at least two possible outcomes per transition")
    pairwise = torch.linalg.vector_norm(outcomes[:, None] - outcomes[None], dim=-1)  # [M, M, N]
    same = torch.eye(outcomes.shape[0], dtype=torch.bool, device=outcomes.device)
    separation = pairwise.masked_fill(same[:, :, None], float("inf")).amin((0, 1))  # [N]
    keep = separation > 1e-6
    if not keep.any():
        raise ValueError("mode_shares: every transition's outcomes coincide; there are no modes")
    samples, outcomes, radius = samples[:, keep], outcomes[:, keep], tolerance * separation[keep]
    to_mode = torch.linalg.vector_norm(samples[:, None] - outcomes[None], dim=-1).amin(1)
    to_mean = torch.linalg.vector_norm(samples - outcomes.mean(0), dim=-1)  # [K, N]
    return (to_mode <= radius).float().mean().item(), (to_mean <= radius).float().mean().item()
