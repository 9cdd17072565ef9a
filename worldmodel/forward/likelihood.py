"""The decoder's likelihood: a diagonal Gaussian of learned scale, and the ELBO's weights.

A unit-variance Gaussian (a plain squared error) prices a bit in z at more than it saves and
the posterior collapses; a learned scale lets the likelihood say how much a better guess of the
next state is worth, so z carries the information the transition has.
"""

from __future__ import annotations

import torch
from torch import Tensor

ELBO_WEIGHTS = ("none", "variance", "per_dim")

MIN_LOG_STD = -7.0  # the decoder's scale may not shrink below ~1e-3 delta-normalised units


def gaussian_nll(error: Tensor, log_std: Tensor) -> Tensor:
    """Negative log-likelihood per dim [..., S] of `error` [..., S] (in the scale's units) under
    N(0, exp(log_std)^2) [S], up to the constant 0.5 log(2 pi)."""
    log_std = log_std.clamp(min=MIN_LOG_STD)
    return 0.5 * (error * torch.exp(-log_std)).square() + log_std


def elbo_weights(log_std: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Weights of the ELBO given the decoder's log-scale [S], not differentiated: one per state
    dim [S] on the NLL, and one scalar on NLL and KL together.

    'none': 1 and 1. 'variance': 1 and the decoder's mean variance v. One factor on NLL and
    KL keeps the ELBO's optimum and changes what the learned scale does to the steps: the
    NLL's gradient on the mean grows as 1/sigma^2 as the scale shrinks, drowning the
    energy score of the dropped windows. 'per_dim': sigma_d^2 / v per dim and v (beta-NLL,
    Seitzer et al. 2022, with beta = 1): the mean's gradient is the squared error's in every
    dim, as the k-step error weighs them, while a nat of KL is still weighed against the
    likelihood at the decoder's mean scale, so the posterior does not collapse.
    """
    if mode not in ELBO_WEIGHTS:
        raise ValueError(f"elbo_weight must be one of {ELBO_WEIGHTS}, got {mode!r}")
    variance = torch.exp(2.0 * log_std.clamp(min=MIN_LOG_STD)).detach()
    ones = torch.ones_like(variance)
    if mode == "none":
        return ones, ones.new_ones(())
    if mode == "variance":
        return ones, variance.mean()
    return variance / variance.mean(), variance.mean()
