"""A probabilistic ensemble (PETS, Chua et al. 2018), the baseline a user might pick instead of
the CVAE, behind the same interface.

E members, each an MLP that outputs a Gaussian over the normalised one-step delta, trained by
its negative log-likelihood with its own Poisson(1) weights per transition, redrawn each batch
(an online bootstrap). Trajectory sampling draws, per step, a member and the Gaussian's noise;
both live in the latent z ~ N(0, I) (z[0] picks the member, z[1:] is the noise), so planners,
imagination and common random numbers treat it as they treat the CVAE's z. Its epistemic
uncertainty is the members' disagreement. Every member is evaluated for every row (E times the
work of one), which keeps the hot loop to a few batched matmuls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Generator, Tensor, nn

from worldmodel.data.store import Stats, Window
from worldmodel.forward.layers import (
    NormalizedModel,
    shift_input_normalization,
    shift_output_normalization,
)
from worldmodel.forward.model import LossTerms


class EnsembleModel(NormalizedModel):
    """E Gaussian-output MLPs over the normalised delta; works on raw (unnormalised) states."""

    def __init__(
        self, state_dim: int, action_dim: int, members: int, hidden: int, layers: int
    ) -> None:
        super().__init__(state_dim)
        if min(state_dim, action_dim, hidden, layers) <= 0 or members < 2:
            raise ValueError(
                "ensemble sizes (dims, hidden, layers) must be positive and members >= 2 "
                "(its uncertainty is the members' disagreement)"
            )
        self.state_dim, self.action_dim, self.members = state_dim, action_dim, members
        self.latent_dim = 1 + state_dim
        sizes = [state_dim + action_dim] + [hidden] * layers + [2 * state_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for inp, out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = inp**-0.5  # nn.Linear's init, per member
            self.weights.append(
                nn.Parameter(torch.empty(members, inp, out).uniform_(-bound, bound))
            )
            self.biases.append(nn.Parameter(torch.empty(members, 1, out).uniform_(-bound, bound)))
        # PETS's soft bounds on the log-variance, learned, so no member claims certainty it has
        # not earned and none blows up outside the data.
        self.max_logvar = nn.Parameter(torch.full((state_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((state_dim,), -10.0))

    stochastic = True

    def _keep_function(self, old: Stats, new: Stats) -> None:
        """The first layer reads the normalised state; the head's means are in delta-normalised
        units and its log-variances (with their soft bounds) shift by the log of the scale."""
        s = self.state_dim
        old_s, new_s = (old.state_mean, old.state_std), (new.state_mean, new.state_std)
        old_d, new_d = (old.delta_mean, old.delta_std), (new.delta_mean, new.delta_std)
        first, head = self.weights[0].transpose(1, 2), self.weights[-1].transpose(1, 2)
        shift_input_normalization(first, self.biases[0][:, 0], slice(0, s), old_s, new_s)
        shift_output_normalization(head, self.biases[-1][:, 0], slice(0, s), old_d, new_d)
        shift = 2.0 * (old.delta_std / new.delta_std).log()
        self.biases[-1][:, 0, s:] += shift
        self.max_logvar += shift
        self.min_logvar += shift

    def member(self, z: Tensor) -> Tensor:
        """The member [...] that z [..., 1 + S] picks: floor(Phi(z[0]) E), so a standard normal
        z[0] picks each equally often and z = 0 (the prior's mean) the middle one."""
        u = 0.5 * (1.0 + torch.erf(z[..., 0] / 2**0.5))
        return (u * self.members).long().clamp(0, self.members - 1)

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
        s, a, z = (
            s.reshape(-1, self.state_dim),
            a.reshape(-1, self.action_dim),
            z.reshape(-1, self.latent_dim),
        )
        mean, logvar = self.gaussians(s, a)
        member = self.member(z)
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
        self,
        s0: Tensor,
        actions: Tensor,
        z: Tensor | None = None,
        generator: Generator | None = None,
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
        n: int = 8,  # pragma: no mutate (unused here: the members are the samples)
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
        centres = (torch.arange(e, device=s0.device, dtype=s0.dtype) + 0.5) / e  # Phi^-1 below
        z[..., 0] = (2**0.5 * torch.erfinv(2 * centres - 1))[:, None]
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
        (Poisson(1) counts); `score_all` (validation) weighs all equally. Steps past a
        termination (`window.mask`) weigh nothing."""
        obs, actions, mask = window.obs, window.action, window.step_mask().flatten(0, 1)
        s, target = obs[:-1].flatten(0, 1), (obs[1:] - obs[:-1]).flatten(0, 1)
        target_n = (target - self.delta_mean) / self.delta_std
        mean, logvar = self.gaussians(s, actions.flatten(0, 1))
        nll = (0.5 * ((target_n - mean).square() * (-logvar).exp() + logvar)).mean(-1)  # [E, N]
        if score_all:
            weights = torch.ones_like(nll)
        else:
            weights = torch.poisson(torch.ones_like(nll), generator=generator)
        weights = weights * mask
        bounds = 0.01 * (self.max_logvar.sum() - self.min_logvar.sum()) / self.state_dim
        loss = (weights * nll).sum() / weights.sum().clamp(min=1.0) + bounds
        zero = obs.new_zeros(())
        squared = (target_n - mean).square().mean(-1)  # [E, N]
        reconstruction = (squared * mask).sum() / (mask.sum().clamp(min=1.0) * self.members)
        return LossTerms(loss=loss, reconstruction=reconstruction, kl=zero, energy=zero)
