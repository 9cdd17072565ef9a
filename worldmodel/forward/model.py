"""Forward model s[t+1] = G(s[t], a[t], z[t]): a conditional VAE with latent dropout (PPUU).

During training an encoder q(z | s, a, s') sees the true next state and proposes z; a KL term
pulls q towards the prior N(0, I). With probability `latent_dropout` (per sample and step) z comes
from the prior instead, or is zero, and no KL is charged, so the model also predicts well without
the posterior. At planning time z is drawn from the prior. With `latent_dim=0` the same class is the
deterministic baseline. Dropout layers inside the MLPs give an epistemic-uncertainty estimate by MC
dropout (`uncertainty`), switched on through `mc_dropout`, which touches only dropout layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Generator, Tensor, nn

from worldmodel.data.store import Stats, Window
from worldmodel.errors import DataError
from worldmodel.forward.layers import functional, mc_dropout, mlp

LATENT_DROPOUT_MODES = ("prior", "zero")


@dataclass(frozen=True)
class LossTerms:
    """Per-step terms of the multi-step loss, each a scalar tensor."""

    loss: Tensor
    reconstruction: Tensor
    kl: Tensor


class ForwardModel(nn.Module):
    """Predicts the next state from state, action and latent; works on raw (unnormalised) states.

    Normalisation statistics are buffers, so they travel with the `state_dict`.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        latent_dim: int = 4,
        hidden: int = 256,
        layers: int = 3,
        dropout: float = 0.05,
        latent_dropout: float = 0.5,
        latent_dropout_mode: str = "prior",
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        if min(state_dim, action_dim, hidden, layers) <= 0 or latent_dim < 0:
            raise ValueError("model sizes must be positive (latent_dim may be 0 for deterministic)")
        if not 0.0 <= latent_dropout <= 1.0 or not 0.0 <= dropout < 1.0:
            raise ValueError("latent_dropout must be in [0, 1] and dropout in [0, 1)")
        if latent_dropout_mode not in LATENT_DROPOUT_MODES:
            raise ValueError(f"latent_dropout_mode must be one of {LATENT_DROPOUT_MODES}")
        self.state_dim, self.action_dim, self.latent_dim = state_dim, action_dim, latent_dim
        self.latent_dropout, self.latent_dropout_mode, self.beta = (
            latent_dropout,
            latent_dropout_mode,
            beta,
        )
        self.decoder = mlp(state_dim + action_dim + latent_dim, hidden, state_dim, layers, dropout)
        self.encoder = (
            mlp(2 * state_dim + action_dim, hidden, 2 * latent_dim, max(layers - 1, 1), 0.0)
            if latent_dim
            else None
        )
        for name in ("state_mean", "delta_mean"):
            self.register_buffer(name, torch.zeros(state_dim))
        for name in ("state_std", "delta_std"):
            self.register_buffer(name, torch.ones(state_dim))

    @property
    def stochastic(self) -> bool:
        return self.latent_dim > 0

    @property
    def device(self) -> torch.device:
        return self.state_mean.device

    def set_normalization(self, stats: Stats) -> None:
        """Copy data statistics into the buffers (done once, before training)."""
        for name in ("state_mean", "state_std", "delta_mean", "delta_std"):
            getattr(self, name).copy_(getattr(stats, name))

    def sample_prior(self, *shape: int, generator: Generator | None = None) -> Tensor:
        """z ~ N(0, I) of shape [*shape, latent_dim] on the model's device."""
        return torch.randn(
            *shape,
            self.latent_dim,
            generator=generator,
            device=self.device,
            dtype=self.state_mean.dtype,
        )

    def _check_dims(self, s: Tensor, a: Tensor, z: Tensor | None, what: str) -> None:
        """Last dims S, A, Z as the model expects, else a `DataError` naming both shapes."""
        for name, x, dim in (("state", s, self.state_dim), ("action", a, self.action_dim)) + (
            (("latent", z, self.latent_dim),) if z is not None else ()
        ):
            if x.dim() == 0 or x.shape[-1] != dim:
                raise DataError(
                    f"{what}: {name} has shape {tuple(x.shape)} but the model expects [..., {dim}]"
                )

    def _predict(self, s: Tensor, a: Tensor, z: Tensor) -> Tensor:
        """Next state [..., S] from s [..., S], a [..., A], z [..., Z]."""
        s_n = (s - self.state_mean) / self.state_std
        delta_n = self.decoder(torch.cat([s_n, a, z], dim=-1))
        return s + delta_n * self.delta_std + self.delta_mean

    def step(
        self, s: Tensor, a: Tensor, z: Tensor | None = None, generator: Generator | None = None
    ) -> Tensor:
        """One step: s [..., S], a [..., A], z [..., Z] (None: drawn from the prior) -> [..., S]."""
        self._check_dims(s, a, z, "ForwardModel.step")
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
        """Unroll from s0 [B, S] under actions [T, B, A] and latents z [T, B, Z] (None: prior).

        Returns the predicted states s[1..T] as [T, B, S].
        """
        self._check_dims(s0, actions, z, "ForwardModel.rollout")
        batch = actions.shape[1:-1]
        if (
            actions.dim() < 2
            or s0.shape[:-1] != batch
            or (z is not None and (z.dim() < 2 or z.shape[1:-1] != batch or len(z) < len(actions)))
        ):
            raise DataError(
                f"ForwardModel.rollout: need s0 [B, {self.state_dim}], actions "
                f"[T, B, {self.action_dim}], z [T, B, {self.latent_dim}]; got {tuple(s0.shape)}, "
                f"{tuple(actions.shape)}, {None if z is None else tuple(z.shape)}"
            )
        if z is None:
            z = self.sample_prior(*actions.shape[:-1], generator=generator)
        horizon = actions.shape[0]
        flat_a, flat_z = actions.flatten(1, -2), z[:horizon].flatten(1, -2)  # [T, N, .]
        # The planner's hot loop, so each step is a handful of ops: the first layer's action and
        # latent terms are one matmul for all steps, the state is carried normalised, and the
        # delta's de-normalisation is folded into the last layer.
        first, hidden, last = self.decoder[0], self.decoder[1:-1], self.decoder[-1]
        w_state, w_rest = first.weight.split(
            [self.state_dim, first.in_features - self.state_dim], 1
        )
        drive = F.linear(torch.cat([flat_a, flat_z], -1), w_rest, first.bias)  # [T, N, H]
        scale = (self.delta_std / self.state_std)[:, None]
        w_out = (last.weight * scale).t()
        b_out = (last.bias * scale[:, 0]) + self.delta_mean / self.state_std
        layers = functional(hidden)
        w_state_t = w_state.t()
        s_n = ((s0 - self.state_mean) / self.state_std).flatten(0, -2)
        states = []
        # unbind, not drive[t]: each indexing's backward would zero-fill a whole [T, N, H] tensor.
        for drive_t in drive.unbind(0):
            h = torch.addmm(drive_t, s_n, w_state_t)
            for layer in layers:
                h = layer(h)
            s_n = torch.addmm(s_n + b_out, h, w_out)
            states.append(s_n)
        states_n = torch.stack(states).view(horizon, *s0.shape)
        return states_n * self.state_std + self.state_mean

    def uncertainty(
        self,
        s0: Tensor,
        actions: Tensor,
        n: int = 8,
        z: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        """Epistemic uncertainty: variance of predictions over `n` dropout masks.

        s0 [B, S], actions [T, B, A], z [T, B, Z] shared by all masks (None: one prior draw).
        Returns [T, B]: the per-step variance summed over normalised state dimensions.
        Differentiable, so a policy can be penalised by it.
        """
        if n < 2:
            raise ValueError(f"uncertainty needs n >= 2 dropout masks, got {n}")
        if z is None:
            z = self.sample_prior(*actions.shape[:-1], generator=generator)
        horizon, batch = actions.shape[:2]
        repeat = lambda x: x.unsqueeze(-3).expand(*x.shape[:-2], n, *x.shape[-2:]).flatten(-3, -2)  # noqa: E731
        with mc_dropout(self):
            states = self.rollout(repeat(s0[None])[0], repeat(actions), repeat(z))
        states = ((states - self.state_mean) / self.state_std).view(horizon, n, batch, -1)
        return states.var(dim=1).sum(-1)

    def _posterior(self, s: Tensor, a: Tensor, s_next: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | s, a, s'), each [B, Z]."""
        assert self.encoder is not None
        s_n = (s - self.state_mean) / self.state_std
        d_n = (s_next - s - self.delta_mean) / self.delta_std
        mu, logvar = self.encoder(torch.cat([s_n, a, d_n], dim=-1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-8.0, 8.0)

    def _training_latent(
        self, s: Tensor, a: Tensor, s_next: Tensor, generator: Generator | None
    ) -> tuple[Tensor, Tensor]:
        """z [B, Z] for one training step and its KL [B] (zero where z was dropped)."""
        mu, logvar = self._posterior(s, a, s_next)
        z_post = (
            mu
            + torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            * (0.5 * logvar).exp()
        )
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)
        dropped = torch.rand(mu.shape[0], generator=generator, device=mu.device) < (
            self.latent_dropout
        )
        z_drop = (
            torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            if self.latent_dropout_mode == "prior"
            else torch.zeros_like(mu)
        )
        z = torch.where(dropped[:, None], z_drop, z_post)
        return z, kl * (~dropped)

    def loss(self, window: Window, generator: Generator | None = None) -> LossTerms:
        """Multi-step loss: unroll H steps on the model's own predictions from the real s[0].

        window.obs [H+1, B, S], window.action [H, B, A]. Reconstruction is the squared error in
        delta-normalised units, averaged over dims, samples and steps; KL is averaged per step.
        """
        obs, actions = window.obs, window.action
        s = obs[0]
        reconstruction = obs.new_zeros(())
        kl = obs.new_zeros(())
        for t in range(actions.shape[0]):
            if self.stochastic:
                z, kl_t = self._training_latent(s, actions[t], obs[t + 1], generator)
                kl = kl + kl_t.mean()
            else:
                z = s.new_zeros(*s.shape[:-1], 0)
            s = self._predict(s, actions[t], z)
            reconstruction = reconstruction + ((s - obs[t + 1]) / self.delta_std).square().mean()
        horizon = actions.shape[0]
        reconstruction, kl = reconstruction / horizon, kl / horizon
        return LossTerms(loss=reconstruction + self.beta * kl, reconstruction=reconstruction, kl=kl)


def normalized_error(model: ForwardModel, predicted: Tensor, target: Tensor) -> Tensor:
    """Squared error in state-normalised units averaged over dims: [..., S] -> [...]."""
    return F.mse_loss(predicted / model.state_std, target / model.state_std, reduction="none").mean(
        -1
    )
