"""Forward model s[t+1] = G(s[t], a[t], z[t]): a conditional VAE with latent dropout (PPUU).

During training an encoder q(z | s, a, s') sees the real transition and proposes z, scored by the
ELBO: a Gaussian likelihood with a learned scale and a KL term pulling q towards the prior, a
learned mixture of Gaussians (`prior_components`, see `prior.py`; 0: N(0, I)). With probability
`latent_dropout` (per window) z comes from the prior instead, or is zero, and no KL is charged:
such windows are scored by the energy score of two prior rollouts, so prior samples are trained to
land on the real outcomes (every mode of them, not their mean) and to respond to the action, which
the posterior's z could otherwise explain away. At planning time z is drawn from the prior. With
`latent_dim=0` the same class is the deterministic baseline, trained on the squared error. Dropout
layers inside the MLPs give an epistemic-uncertainty estimate by MC dropout (`uncertainty`: the
spread of rollouts under sampled dropout masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Generator, Tensor, nn

from worldmodel.data.store import Stats, Window
from worldmodel.errors import DataError
from worldmodel.forward.layers import (
    NormalizedModel,
    dropout_masks,
    functional,
    mlp,
    shift_input_normalization,
    shift_output_normalization,
)
from worldmodel.forward.likelihood import ELBO_WEIGHTS, MIN_LOG_STD, elbo_weights, gaussian_nll
from worldmodel.forward.prior import MixturePrior, gaussian_kl

LATENT_DROPOUT_MODES = ("prior", "zero")


@dataclass(frozen=True)
class LossTerms:
    """Per-step terms of the multi-step loss, each a scalar tensor."""

    loss: Tensor  #: what training minimises
    reconstruction: Tensor  #: squared error per dim (delta-normalised) with z from the posterior
    kl: Tensor  #: KL(q || prior) per state dim and step, of the windows scored by the ELBO
    energy: Tensor  #: energy score of prior samples per step (0 for the deterministic model)

    def metrics(self) -> dict[str, float]:
        """The terms besides `loss`, as floats, by name (what the trainer logs)."""
        return {
            "reconstruction": self.reconstruction.item(),
            "kl": self.kl.item(),
            "energy": self.energy.item(),
        }


class ForwardModel(NormalizedModel):
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
        elbo_weight: str = "none",
        energy_samples: int = 2,
        prior_components: int = 4,
    ) -> None:
        super().__init__(state_dim)
        if min(state_dim, action_dim, hidden, layers) <= 0 or latent_dim < 0:
            raise ValueError("model sizes must be positive (latent_dim may be 0 for deterministic)")
        if not 0.0 <= latent_dropout <= 1.0 or not 0.0 <= dropout < 1.0:
            raise ValueError("latent_dropout must be in [0, 1] and dropout in [0, 1)")
        if latent_dropout_mode not in LATENT_DROPOUT_MODES:
            raise ValueError(f"latent_dropout_mode must be one of {LATENT_DROPOUT_MODES}")
        if elbo_weight not in ELBO_WEIGHTS:
            raise ValueError(f"elbo_weight must be one of {ELBO_WEIGHTS}")
        if energy_samples < 2 or prior_components < 0:
            raise ValueError("energy_samples must be >= 2 and prior_components >= 0")
        self.energy_samples = energy_samples
        self.elbo_weight = elbo_weight
        self.state_dim, self.action_dim, self.latent_dim = state_dim, action_dim, latent_dim
        self.latent_dropout, self.latent_dropout_mode = latent_dropout, latent_dropout_mode
        self.beta = beta
        self.decoder = mlp(state_dim + action_dim + latent_dim, hidden, state_dim, layers, dropout)
        self.encoder = (
            mlp(2 * state_dim + action_dim, hidden, 2 * latent_dim, max(layers - 1, 1), 0.0)
            if latent_dim
            else None
        )
        # The decoder's Gaussian scale per state dim (delta-normalised units): with it the ELBO
        # weighs a nat of KL against a real likelihood, not a unit-variance one, under which
        # carrying a bit in z costs more than it saves and the posterior collapses.
        if latent_dim:
            self.log_std = nn.Parameter(torch.zeros(state_dim))
        self.prior = (
            MixturePrior(prior_components, latent_dim) if prior_components and latent_dim else None
        )

    @property
    def stochastic(self) -> bool:
        return self.latent_dim > 0

    def sample_prior(self, *shape: int, generator: Generator | None = None) -> Tensor:
        """z [*shape, Z] from the prior: N(0, I), or the learned mixture (`prior_components`).
        Detached: a planner's or a policy's backward pass must not leave gradients on the model's
        prior (only the model's own loss trains it, through `prior.sample`)."""
        if self.prior is None:
            return super().sample_prior(*shape, generator=generator)
        return self.prior.sample(*shape, generator=generator).detach()

    def _keep_function(self, old: Stats, new: Stats) -> None:
        """Decoder and encoder read the state (and the encoder the delta) normalised; the
        decoder's head and the learned scale are in delta-normalised units."""
        s, a = self.state_dim, self.action_dim
        states = slice(0, s)
        old_s, new_s = (old.state_mean, old.state_std), (new.state_mean, new.state_std)
        old_d, new_d = (old.delta_mean, old.delta_std), (new.delta_mean, new.delta_std)
        first, head = self.decoder[0], self.decoder[-1]
        shift_input_normalization(first.weight, first.bias, states, old_s, new_s)
        shift_output_normalization(head.weight, head.bias, states, old_d, new_d)
        if self.encoder is not None:
            enc = self.encoder[0]
            shift_input_normalization(enc.weight, enc.bias, states, old_s, new_s)
            shift_input_normalization(enc.weight, enc.bias, slice(s + a, 2 * s + a), old_d, new_d)
            self.log_std += (old.delta_std / new.delta_std).log()
            self.log_std.clamp_(min=MIN_LOG_STD)

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
        dropout_masks: list[Tensor] | None = None,
    ) -> Tensor:
        """Unroll from s0 [B, S] under actions [T, B, A] and latents z [T, B, Z] (None: prior).

        `dropout_masks` (`layers.dropout_masks(decoder, B)`: one [B, hidden] per dropout layer)
        fix each rollout's dropout for all its steps. Returns the predicted states s[1..T] as
        [T, B, S].
        """
        self._check_dims(s0, actions, z, "ForwardModel.rollout")
        batch = actions.shape[1:-1]
        if (
            actions.dim() < 3
            or s0.shape[:-1] != batch
            or (z is not None and (z.shape[1:-1] != batch or len(z) < len(actions)))
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
        layers = functional(hidden, dropout_masks)
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

        Each mask is drawn once per rollout and kept for all its steps: a mask is a sampled
        sub-network (Gal and Ghahramani's reading of dropout), so a rollout is the future under
        one plausible model, as an ensemble member's is, and the masks are drawn T times less.
        """
        if n < 2:
            raise ValueError(f"uncertainty needs n >= 2 dropout masks, got {n}")
        if z is None:
            z = self.sample_prior(*actions.shape[:-1], generator=generator)
        horizon, batch = actions.shape[:2]
        repeat = lambda x: x.unsqueeze(-3).expand(*x.shape[:-2], n, *x.shape[-2:]).flatten(-3, -2)  # noqa: E731
        masks = dropout_masks(self.decoder, n * batch)
        states = self.rollout(repeat(s0[None])[0], repeat(actions), repeat(z), dropout_masks=masks)
        states = ((states - self.state_mean) / self.state_std).view(horizon, n, batch, -1)
        return states.var(dim=1).sum(-1)

    def _posterior(self, s: Tensor, a: Tensor, s_next: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | s, a, s'), each [B, Z]."""
        assert self.encoder is not None
        s_n = (s - self.state_mean) / self.state_std
        d_n = (s_next - s - self.delta_mean) / self.delta_std
        mu, logvar = self.encoder(torch.cat([s_n, a, d_n], dim=-1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-8.0, 8.0)

    def _posterior_terms(
        self,
        obs: Tensor,
        actions: Tensor,
        generator: Generator | None,
        mask: Tensor | None = None,
        dim_weight: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Unroll with z from q(z | s, a, s'): per window [B] the Gaussian NLL per state dim
        (each dim's times `dim_weight` [S], None: 1), the KL per state dim and the squared error
        per dim, each averaged over the window's real steps (`mask` [H, B] float, 0 past a
        termination; None: all are real).

        The encoder sees the real transition (obs[t], obs[t+1]), not the unrolled prediction:
        from the prediction and the real next state z could learn the drift the rollout has
        accumulated, which no prior draw can know, and prior samples would scatter by as much.

        obs [H+1, B, S], actions [H, B, A]. The NLL is in delta-normalised units under the
        decoder's learned scale, up to the constant 0.5 log(2 pi).
        """
        s = obs[0]
        dim_weight = torch.ones_like(self.log_std) if dim_weight is None else dim_weight
        mask = obs.new_ones(actions.shape[:2]) if mask is None else mask
        nll = kl = squared = obs.new_zeros(obs.shape[1])
        for t in range(actions.shape[0]):
            mu, logvar = self._posterior(obs[t], actions[t], obs[t + 1])
            noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            kl = kl + mask[t] * gaussian_kl(mu, logvar, noise, self.prior)
            s = self._predict(s, actions[t], mu + noise * (0.5 * logvar).exp())
            error = (s - obs[t + 1]) / self.delta_std
            dim_nll = gaussian_nll(error, self.log_std)
            nll = nll + mask[t] * (dim_weight * dim_nll).sum(-1)
            squared = squared + mask[t] * error.square().mean(-1)
        steps = mask.sum(0).clamp(min=1.0)
        return nll / (steps * self.state_dim), kl / (steps * self.state_dim), squared / steps

    def _prior_energy(
        self,
        obs: Tensor,
        actions: Tensor,
        generator: Generator | None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Energy score [B] of `energy_samples` rollouts with z from the prior against the real
        one, per step in delta-normalised units divided by sqrt(S), averaged over the window's
        real steps (`mask` [H, B]; None: all); one rollout with 'zero' latent dropout. More
        samples estimate the spread term with less noise (its pairs i < j), at the cost of as
        many more rollouts.

        The energy score E|X - y| - E|X - X'|/2 is proper: it is least when the samples are
        distributed as the real outcomes, so it trains prior samples onto every mode, where a
        squared error would pull them all onto the mean.
        """
        horizon, batch = actions.shape[:2]
        mask = obs.new_ones(horizon, batch) if mask is None else mask
        # 'zero' mode has one z, so one rollout: its score is its error norm. (Two would differ
        # only by their dropout masks, and the spread term would pay them to disagree.)
        k = self.energy_samples if self.latent_dropout_mode == "prior" else 1
        if k > 1:
            z = (
                self.prior.sample(horizon, k, batch, generator=generator)
                if self.prior is not None
                else self.sample_prior(horizon, k, batch, generator=generator)
            )
            first, second = torch.triu_indices(k, k, 1, device=obs.device)  # the pairs i < j
        else:
            z = obs.new_zeros(horizon, k, batch, self.latent_dim)
        states = obs[0].expand(k, *obs[0].shape)
        energy = obs.new_zeros(batch)
        for t in range(horizon):
            states = self._predict(states, actions[t].expand(k, *actions[t].shape), z[t])
            step = _norm((states - obs[t + 1]) / self.delta_std).mean(0)  # [B]
            if k > 1:
                spread = _norm((states[first] - states[second]) / self.delta_std).mean(0)
                step = step - 0.5 * spread
            energy = energy + mask[t] * step
        return energy / (mask.sum(0).clamp(min=1.0) * self.state_dim**0.5)

    def loss(
        self, window: Window, generator: Generator | None = None, score_all: bool = False
    ) -> LossTerms:
        """Multi-step loss: unroll H steps on the model's own predictions from the real s[0].

        window.obs [H+1, B, S], window.action [H, B, A]. The deterministic model (latent_dim 0)
        is trained on the squared error in delta-normalised units. The CVAE's windows are split
        by latent dropout: a kept window is scored by the negative ELBO (Gaussian NLL under a
        learned scale plus beta * KL, both per state dim), a dropped one (probability
        `latent_dropout`) by the energy score of z drawn from the prior, with no KL. With
        `score_all` (validation) every window is scored both ways, the ELBO unweighted, and the
        loss is their sum. Steps past a termination (`window.mask`) are not scored.
        """
        obs, actions, mask = window.obs, window.action, window.step_mask()
        if not self.stochastic:
            reconstruction = obs.new_zeros(())
            s = obs[0]
            for t in range(actions.shape[0]):
                s = self._predict(s, actions[t], s.new_zeros(*s.shape[:-1], 0))
                error = ((s - obs[t + 1]) / self.delta_std).square().mean(-1)  # [B]
                reconstruction = reconstruction + (mask[t] * error).sum()
            reconstruction = reconstruction / mask.sum().clamp(min=1.0)
            zero = obs.new_zeros(())
            return LossTerms(
                loss=reconstruction, reconstruction=reconstruction, kl=zero, energy=zero
            )
        batch = obs.shape[1]
        if score_all:
            kept = dropped = torch.ones(batch, dtype=torch.bool, device=obs.device)
        else:
            dropped = (
                torch.rand(batch, generator=generator, device=obs.device) < self.latent_dropout
            )
            kept = ~dropped
        # The weights shape training's steps; validation, and so early stopping, scores the
        # plain ELBO, the same quantity whatever the weights.
        dim_weight, weight = (
            (None, 1.0) if score_all else elbo_weights(self.log_std, self.elbo_weight)
        )
        nll, kl, squared = self._posterior_terms(
            obs[:, kept], actions[:, kept], generator, mask[:, kept], dim_weight
        )
        energy = self._prior_energy(
            obs[:, dropped], actions[:, dropped], generator, mask[:, dropped]
        )
        elbo = (nll + self.beta * kl) * weight
        if score_all:
            loss = elbo.mean() + energy.mean()
        else:
            loss = (elbo.sum() + energy.sum()) / batch
        return LossTerms(
            loss=loss,
            reconstruction=_mean(squared),
            kl=_mean(kl),
            energy=_mean(energy),
        )


def _norm(x: Tensor) -> Tensor:
    """Euclidean norm over the last dim, smooth at 0 (the energy score's samples may coincide)."""
    return (x.square().sum(-1) + 1e-12).sqrt()


def _mean(x: Tensor) -> Tensor:
    """Mean of x [B]; 0 for an empty batch (every window went to the other branch)."""
    return x.sum() / max(x.numel(), 1)
