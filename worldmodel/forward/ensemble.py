"""A probabilistic ensemble (PETS, Chua et al. 2018), the baseline a user might pick instead of
the CVAE, behind the same interface.

E members, each an MLP that outputs a Gaussian over the normalised one-step delta, trained by
its negative log-likelihood on its own bootstrap of the data. Trajectory sampling draws, per
step, a member and the Gaussian's noise; both live in the latent z = [u, eps] (u ~ U(0, 1) picks
the member, eps ~ N(0, I) the noise), so planners, imagination and common random numbers treat
it as they treat the CVAE's z. Its epistemic uncertainty is the members' disagreement.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Generator, Tensor, nn

from worldmodel.data.store import Stats, Window
from worldmodel.forward.model import LossTerms


class EnsembleModel(nn.Module):
    """E Gaussian-output MLPs over the normalised delta; works on raw (unnormalised) states."""

    def __init__(
        self, state_dim: int, action_dim: int, members: int, hidden: int, layers: int
    ) -> None:
        super().__init__()
        if min(state_dim, action_dim, members, hidden, layers) <= 0:
            raise ValueError("ensemble sizes (dims, members, hidden, layers) must be positive")
        self.state_dim, self.action_dim, self.members = state_dim, action_dim, members
        self.latent_dim = 1 + state_dim
        sizes = [state_dim + action_dim] + [hidden] * layers + [2 * state_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for inp, out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = inp**-0.5  # nn.Linear's init, per member
            self.weights.append(nn.Parameter(torch.empty(members, inp, out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, out).uniform_(-bound, bound)))
        # PETS's soft bounds on the log-variance, learned, so no member claims certainty it has
        # not earned and none blows up outside the data.
        self.max_logvar = nn.Parameter(torch.full((state_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((state_dim,), -10.0))
        for name in ("state_mean", "delta_mean"):
            self.register_buffer(name, torch.zeros(state_dim))
        for name in ("state_std", "delta_std"):
            self.register_buffer(name, torch.ones(state_dim))

    stochastic = True

    @property
    def device(self) -> torch.device:
        return self.state_mean.device

    def set_normalization(self, stats: Stats) -> None:
        """Copy data statistics into the buffers (done once, before training)."""
        for name in ("state_mean", "state_std", "delta_mean", "delta_std"):
            getattr(self, name).copy_(getattr(stats, name))

    def sample_prior(self, *shape: int, generator: Generator | None = None) -> Tensor:
        """z = [u ~ U(0, 1), eps ~ N(0, I)] of shape [*shape, 1 + S]."""
        kw = {"generator": generator, "device": self.device, "dtype": self.state_mean.dtype}
        return torch.cat([torch.rand(*shape, 1, **kw), torch.randn(*shape, self.state_dim, **kw)], -1)

    def gaussians(self, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """Every member's mean and log-variance of the normalised delta: [E, N, S] each, from
        s [N, S], a [N, A]."""
        h = torch.cat([(s - self.state_mean) / self.state_std, a], -1).expand(self.members, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = F.silu(h)
        mean, logvar = h.chunk(2, -1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        return mean, self.min_logvar + F.softplus(logvar - self.min_logvar)

    def _predict(self, s: Tensor, a: Tensor, z: Tensor) -> Tensor:
        """Next state [..., S] from s [..., S], a [..., A], z [..., 1 + S]."""
        lead = s.shape[:-1]
        s, a, z = s.reshape(-1, self.state_dim), a.reshape(-1, self.action_dim), z.reshape(-1, self.latent_dim)
        mean, logvar = self.gaussians(s, a)
        member = (z[:, 0] * self.members).long().clamp(0, self.members - 1)
        rows = torch.arange(len(s), device=s.device)
        delta_n = mean[member, rows] + (0.5 * logvar[member, rows]).exp() * z[:, 1:]
        return (s + delta_n * self.delta_std + self.delta_mean).view(*lead, self.state_dim)

    def step(
        self, s: Tensor, a: Tensor, z: Tensor | None = None, generator: Generator | None = None
    ) -> Tensor:
        """One step: s [..., S], a [..., A], z [..., 1 + S] (None: drawn) -> [..., S]."""
        if z is None:
            z = self.sample_prior(*s.shape[:-1], generator=generator)
        return self._predict(s, a, z)

    def rollout(
        self, s0: Tensor, actions: Tensor, z: Tensor | None = None, generator: Generator | None = None
    ) -> Tensor:
        """Unroll from s0 [B, S] under actions [T, B, A] and z [T, B, 1 + S] (None: drawn);
        returns s[1..T] as [T, B, S]."""
        if z is None:
            z = self.sample_prior(*actions.shape[:-1], generator=generator)
        states, s = [], s0
        for t in range(actions.shape[0]):
            s = self._predict(s, actions[t], z[t])
            states.append(s)
        return torch.stack(states)

    def uncertainty(
        self,
        s0: Tensor,
        actions: Tensor,
        n: int = 8,
        z: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        """Epistemic uncertainty [T, B]: the variance over members of their noise-free rollouts
        from s0 [B, S] under actions [T, B, A], summed over normalised state dims (`n` and `z`
        are unused: the members are the samples)."""
        del n, z, generator
        horizon, batch = actions.shape[:2]
        e = self.members
        z = torch.zeros(horizon, e, batch, self.latent_dim, device=s0.device, dtype=s0.dtype)
        z[..., 0] = ((torch.arange(e, device=s0.device, dtype=s0.dtype) + 0.5) / e)[:, None]
        states = self.rollout(
            s0.expand(e, -1, -1).reshape(e * batch, -1),
            actions[:, None].expand(-1, e, -1, -1).reshape(horizon, e * batch, -1),
            z.view(horizon, e * batch, -1),
        )
        states = ((states - self.state_mean) / self.state_std).view(horizon, e, batch, -1)
        return states.var(dim=1).sum(-1)

    def loss(
        self, window: Window, generator: Generator | None = None, score_all: bool = False
    ) -> LossTerms:
        """Gaussian NLL per state dim of each member on every transition of the window [H+1, B]
        (one-step, as PETS trains), each member weighing transitions by its own bootstrap draw
        (Poisson(1) counts); `score_all` (validation) weighs all equally."""
        obs, actions = window.obs, window.action
        s, target = obs[:-1].flatten(0, 1), (obs[1:] - obs[:-1]).flatten(0, 1)
        target_n = (target - self.delta_mean) / self.delta_std
        mean, logvar = self.gaussians(s, actions.flatten(0, 1))
        nll = (0.5 * ((target_n - mean).square() * (-logvar).exp() + logvar)).mean(-1)  # [E, N]
        if score_all:
            weights = torch.ones_like(nll)
        else:
            weights = torch.poisson(torch.ones_like(nll), generator=generator)
        bounds = 0.01 * (self.max_logvar.sum() - self.min_logvar.sum()) / self.state_dim
        loss = (weights * nll).sum() / weights.sum().clamp(min=1.0) + bounds
        zero = obs.new_zeros(())
        reconstruction = (target_n - mean).square().mean()
        return LossTerms(loss=loss, reconstruction=reconstruction, kl=zero, energy=zero)
