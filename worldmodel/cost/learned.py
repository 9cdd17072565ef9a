"""Learned intrinsic cost and termination, for tasks whose reward is not written in torch.

The talk's cost module is an intrinsic cost C(s) plus a trainable critic. Where a task gives its
reward as an exact torch formula (`envs.tasks`), that formula is the intrinsic cost. Where it
does not (any gymnasium env, DeepMind Control), the cost is learned from the same transitions as
the world model, as TD-MPC2, DreamerV3 and mbrl-lib learn the reward:

- `cost(s, a, s')` regresses minus the env's reward, on state-normalised s, the action and the
  delta-normalised change s' - s (rewards such as forward velocity are a change over a step);
- `terminated(s')` is a classifier of the env's termination flag from the next state, trained
  with the positives re-weighted by the data's share of them (terminations are rare: one per
  episode at most).

Both are differentiable MLPs, so the gradient planner and the policy learner can use the cost as
they use an exact one; `terminated` returns booleans like `Task.terminated`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Generator, Tensor, nn

from worldmodel.data.store import EpisodeStore, Stats, Window
from worldmodel.forward.layers import mlp, shift_input_normalization, shift_output_normalization
from worldmodel.types import TerminationFn

_MAX_POS_WEIGHT = 1000.0  # bounds the re-weighting of terminations when there are very few


@dataclass(frozen=True)
class CostStats:
    """What the learned cost is normalised by, from the training data."""

    cost_mean: float  #: mean of minus the reward per transition
    cost_std: float  #: its standard deviation (floored, so a constant reward is not divided by 0)
    terminal_share: float  #: share of transitions that end in a termination

    @classmethod
    def of(cls, store: EpisodeStore) -> CostStats:
        """The statistics of `store`'s transitions."""
        cost = -store.data["reward"].astype(np.float64)
        terminated = store.data["terminated"]
        if len(cost) == 0:
            raise ValueError("cost statistics need at least one transition")
        return cls(float(cost.mean()), max(float(cost.std()), 1e-6), float(terminated.mean()))


@dataclass(frozen=True)
class CostTerms:
    """The learned cost's loss and its parts, each a scalar tensor."""

    loss: Tensor  #: what training minimises: cost error plus termination loss
    cost_error: Tensor  #: squared error of the cost, in units of the data's cost std
    termination: Tensor  #: weighted binary cross-entropy of termination (0 if none is learned)

    def metrics(self) -> dict[str, float]:
        """The parts as floats, by name (what the trainer logs)."""
        return {"cost_error": self.cost_error.item(), "termination": self.termination.item()}


class LearnedCost(nn.Module):
    """c(s, a, s') and P(terminated | s') learned from transitions (module doc).

    Args:
        state_dim: S.
        action_dim: A.
        hidden: width of both MLPs.
        layers: hidden layers of both MLPs.
        terminates: whether to learn a termination classifier (False for tasks that never end
            early: `terminated` is then None, as `Task.terminated` is).
    """

    def __init__(
        self, state_dim: int, action_dim: int, hidden: int = 128, layers: int = 2,
        terminates: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        if min(state_dim, action_dim, hidden) < 1 or layers < 0:
            raise ValueError("state_dim, action_dim and hidden must be >= 1 and layers >= 0")
        self.state_dim, self.action_dim = state_dim, action_dim
        self.cost_net = mlp(2 * state_dim + action_dim, hidden, 1, layers, 0.0)
        self.termination_net = mlp(state_dim, hidden, 1, layers, 0.0) if terminates else None
        for name in ("state_mean", "delta_mean"):
            self.register_buffer(name, torch.zeros(state_dim))
        for name in ("state_std", "delta_std"):
            self.register_buffer(name, torch.ones(state_dim))
        self.register_buffer("cost_mean", torch.zeros(()))
        self.register_buffer("cost_std", torch.ones(()))
        self.register_buffer("pos_weight", torch.ones(()))

    @property
    def device(self) -> torch.device:
        return self.state_mean.device

    @property
    def terminated(self) -> TerminationFn | None:
        """``terminated(next_obs [..., S]) -> bool [...]`` (`is_terminal`), or None without a
        classifier: what a `Task` holds as its termination."""
        return None if self.termination_net is None else self.is_terminal

    def set_normalization(self, stats: Stats, costs: CostStats) -> None:
        """Copy the data statistics into the buffers (before training; `renormalize` later)."""
        for name in ("state_mean", "state_std", "delta_mean", "delta_std"):
            getattr(self, name).copy_(getattr(stats, name))
        self.cost_mean.fill_(costs.cost_mean)
        self.cost_std.fill_(costs.cost_std)
        share = costs.terminal_share
        self.pos_weight.fill_(min((1 - share) / share, _MAX_POS_WEIGHT) if share > 0 else 1.0)

    @torch.no_grad()
    def renormalize(self, stats: Stats, costs: CostStats) -> None:
        """Move to the statistics of more data keeping the cost and termination functions (the
        nets' weights re-expressed for the new units; see `NormalizedModel.renormalize`)."""
        s, a, device = self.state_dim, self.action_dim, self.device
        old_s, old_d = (
            (self.state_mean.clone(), self.state_std.clone()),
            (
                self.delta_mean.clone(),
                self.delta_std.clone(),
            ),
        )
        new_s = (stats.state_mean.to(device), stats.state_std.to(device))
        new_d = (stats.delta_mean.to(device), stats.delta_std.to(device))
        first, head = self.cost_net[0], self.cost_net[-1]
        shift_input_normalization(first.weight, first.bias, slice(0, s), old_s, new_s)
        shift_input_normalization(first.weight, first.bias, slice(s + a, 2 * s + a), old_d, new_d)
        new_c = (torch.full_like(self.cost_mean, costs.cost_mean).view(1),
                 torch.full_like(self.cost_std, costs.cost_std).view(1))  # fmt: skip
        old_c = (self.cost_mean.view(1), self.cost_std.view(1))
        shift_output_normalization(head.weight, head.bias, slice(0, 1), old_c, new_c)
        if self.termination_net is not None:
            term = self.termination_net[0]
            shift_input_normalization(term.weight, term.bias, slice(0, s), old_s, new_s)
        self.set_normalization(stats, costs)

    def forward(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        """Cost [...] of transitions obs [..., S] -> next_obs [..., S] under action [..., A]."""
        return self._normalised_cost(obs, action, next_obs) * self.cost_std + self.cost_mean

    def _normalised_cost(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        lead = torch.broadcast_shapes(obs.shape[:-1], action.shape[:-1], next_obs.shape[:-1])
        obs, next_obs = obs.expand(*lead, self.state_dim), next_obs.expand(*lead, self.state_dim)
        action = action.expand(*lead, self.action_dim)
        x = torch.cat(
            [
                (obs - self.state_mean) / self.state_std,
                action,
                (next_obs - obs - self.delta_mean) / self.delta_std,
            ],
            dim=-1,
        )
        return self.cost_net(x).squeeze(-1)

    def termination_logit(self, next_obs: Tensor) -> Tensor:
        """Log-odds [...] that the env terminates on reaching next_obs [..., S]."""
        if self.termination_net is None:
            raise ValueError("this learned cost has no termination classifier (terminates=False)")
        return self.termination_net((next_obs - self.state_mean) / self.state_std).squeeze(-1)

    def is_terminal(self, next_obs: Tensor) -> Tensor:
        """Whether the env ends on reaching next_obs [..., S]: log-odds above 0, bool [...]."""
        return self.termination_logit(next_obs) > 0

    def loss(
        self, window: Window, generator: Generator | None = None, score_all: bool = False
    ) -> CostTerms:
        """Loss on every real transition of window ([H+1, B, S] states, [H, B] rewards and
        flags; the steps past a termination, `window.mask`, are not scored).

        The cost is regressed in units of the data's cost std; termination by binary
        cross-entropy with the positives weighted by `pos_weight`. Deterministic, so
        `generator` and `score_all` (the trainer's interface) change nothing.
        """
        del generator, score_all
        obs, actions, mask = window.obs, window.action, window.step_mask()
        steps = mask.sum().clamp(min=1.0)
        target = (-window.reward - self.cost_mean) / self.cost_std
        error = (self._normalised_cost(obs[:-1], actions, obs[1:]) - target).square()
        cost_error = (mask * error).sum() / steps
        termination = obs.new_zeros(())
        if self.termination_net is not None:
            per_step = F.binary_cross_entropy_with_logits(
                self.termination_logit(obs[1:]),
                window.terminated.to(obs.dtype),
                pos_weight=self.pos_weight,
                reduction="none",
            )
            termination = (mask * per_step).sum() / steps
        return CostTerms(cost_error + termination, cost_error, termination)
