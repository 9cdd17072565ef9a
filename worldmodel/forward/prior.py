"""The CVAE's prior p(z): the standard normal, or a learned mixture of diagonal Gaussians.

Under N(0, I) the aggregate posterior of a task with two futures (two clusters of z, one per
mode) has to be squeezed into one bell, and the bell's mass between the clusters is where the
decoder crosses from one mode to the other: prior samples drawn there land between the modes,
where no real outcome is. A mixture fitted to the posterior (its KL term estimated by sampling,
which makes the prior's gradient the maximum-likelihood fit to the posterior's z) puts its mass
on the clusters and little between them (Tomczak and Welling's VampPrior argument, with free
components instead of pseudo-inputs). It is unconditional, so a plan's z can still be drawn
before the rollout.
"""

from __future__ import annotations

import math

import torch
from torch import Generator, Tensor, nn

_LOG_2PI = math.log(2.0 * math.pi)


class MixturePrior(nn.Module):
    """p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)) over `components` K Gaussians in `latent_dim` Z.

    Starts as a smoothed draw from N(0, I): means from N(0, I) (torch's global RNG), scales 0.5,
    equal weights. Components that begin alike stay alike (a mixture of equal components is a
    stationary point of its fit), so they start narrow and apart, each near its own part of
    the posterior's z.
    """

    def __init__(self, components: int, latent_dim: int) -> None:
        super().__init__()
        if components < 1 or latent_dim < 1:
            raise ValueError("a mixture prior needs components >= 1 and latent_dim >= 1")
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.log_stds = nn.Parameter(torch.full((components, latent_dim), math.log(0.5)))
        self.logits = nn.Parameter(torch.zeros(components))

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) [...] of z [..., Z]."""
        log_std = self.log_stds.clamp(min=_MIN_LOG_STD)
        scaled = (z.unsqueeze(-2) - self.means) * torch.exp(-log_std)  # [..., K, Z]
        per_component = -0.5 * (scaled.square() + _LOG_2PI).sum(-1) - log_std.sum(-1)
        return torch.logsumexp(per_component + self.logits.log_softmax(-1), dim=-1)

    def sample(self, *shape: int, generator: Generator | None = None) -> Tensor:
        """z [*shape, Z]: a component drawn by its weight, then its Gaussian; differentiable in
        the means and scales (not in the weights)."""
        n = math.prod(shape)
        weights = self.logits.detach().softmax(-1)
        # A broken (NaN) prior must give NaN latents, which the planner's checks catch, not an
        # exception from multinomial.
        weights = torch.where(weights.isfinite(), weights, torch.ones_like(weights))
        pick = (  # multinomial refuses to draw nothing, but an empty batch is a valid request
            torch.multinomial(weights, n, replacement=True, generator=generator)
            if n
            else torch.zeros(0, dtype=torch.long, device=weights.device)
        )
        noise = torch.randn(
            n, self.means.shape[1], generator=generator, device=weights.device, dtype=weights.dtype
        )
        z = self.means[pick] + noise * self.log_stds.clamp(min=_MIN_LOG_STD)[pick].exp()
        return z.view(*shape, self.means.shape[1])


def gaussian_kl(mu: Tensor, logvar: Tensor, noise: Tensor, prior: MixturePrior | None) -> Tensor:
    """KL(q || p) [B] of q = N(mu, exp(logvar)) [B, Z], z = mu + noise * std its sample.

    The standard normal's is exact; a mixture's has no closed form, so it is the one-sample
    estimate log q(z) - log p(z) at that z (unbiased, and its gradient fits p to q's samples).
    """
    if prior is None:
        return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)
    z = mu + noise * (0.5 * logvar).exp()
    log_q = -0.5 * (noise.square() + logvar + _LOG_2PI).sum(-1)
    return log_q - prior.log_prob(z)


_MIN_LOG_STD = -5.0  # a component may not shrink to a point (the log-density would diverge)
