"""Critic V(s): expected discounted cost-to-go of the current policy, learned by TD(lambda).

Targets are lambda-returns (Sutton & Barto, ch. 12) bootstrapped from a slow Polyak copy of the
critic, as in DQN/DDPG and Dreamer: regressing on a moving copy of itself makes the online net
chase its own noise, the slow copy damps that. Trajectories come either from imagination (the
policy learner's rollouts through the world model: on-policy, the usual choice) or from real
windows of the replay data (off-policy for the current policy, but free of model error).

Time-major conventions: states [T+1, B, S] hold s[0..T]; costs [T, B] hold c(s[t], a[t], s[t+1]);
continues [T, B] are 0 where s[t+1] is terminal (nothing is paid after it) and 1 otherwise.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from worldmodel.cost.trajectory import alive_weights
from worldmodel.data.store import Stats, Window
from worldmodel.forward.layers import mlp, renormalize_state_input
from worldmodel.optim import guarded_step
from worldmodel.types import CostFn

Metrics = dict[str, float]


def td_lambda_targets(
    costs: Tensor, values: Tensor, continues: Tensor, gamma: float, lambda_: float
) -> Tensor:
    """lambda-returns G[t] = c[t] + gamma * d[t] * ((1 - lambda) * v[t+1] + lambda * G[t+1]).

    costs [T, B], values [T+1, B] (v[T] bootstraps the tail), continues d [T, B] -> [T, B].
    lambda = 0 is one-step TD, lambda = 1 the Monte Carlo return closed by gamma^T * v[T]; a
    terminal step (d = 0) cuts both the bootstrap and all later costs.
    """
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lambda_ <= 1.0):
        raise ValueError(f"gamma and lambda_ must be in [0, 1], got {gamma} and {lambda_}")
    if values.shape[0] != costs.shape[0] + 1 or continues.shape != costs.shape:
        raise ValueError(
            f"need costs [T, B], values [T+1, B], continues [T, B]; got {tuple(costs.shape)}, "
            f"{tuple(values.shape)}, {tuple(continues.shape)}"
        )
    continues = continues.to(costs.dtype)
    targets, tail = [], values[-1]
    for t in reversed(range(costs.shape[0])):
        tail = costs[t] + gamma * continues[t] * ((1 - lambda_) * values[t + 1] + lambda_ * tail)
        targets.append(tail)
    return torch.stack(targets[::-1])


class Critic(nn.Module):
    """V(s [..., S]) -> cost-to-go [...]; raw states in, normalised inside.

    The output is `value_scale` times the network's, so that the net works in units of order 1
    whatever the task's cost magnitude (e.g. mean |cost| / (1 - gamma)); the scale and the state
    statistics are buffers and travel with the `state_dict`.
    """

    def __init__(self, state_dim: int, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        if min(state_dim, hidden, layers) <= 0:
            raise ValueError("state_dim, hidden and layers must be positive")
        self.state_dim = state_dim
        self.net = mlp(state_dim, hidden, 1, layers, dropout=0.0)
        head = self.net[-1]
        assert isinstance(head, nn.Linear)
        with torch.no_grad():
            # V = 0 at first: a random head times value_scale would be a large, arbitrary
            # cost-to-go that the policy learner would chase before TD has corrected it.
            head.weight.zero_()
            head.bias.zero_()
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        self.register_buffer("value_scale", torch.ones(()))

    def set_normalization(self, stats: Stats, value_scale: float = 1.0) -> None:
        """Copy the data's state statistics and the typical cost-to-go magnitude into buffers.

        Call it before building the `CriticLearner`, whose target copy starts from these buffers.
        """
        if not value_scale > 0:
            raise ValueError(f"value_scale must be positive, got {value_scale}")
        self.state_mean.copy_(stats.state_mean)
        self.state_std.copy_(stats.state_std)
        self.value_scale.fill_(value_scale)

    @torch.no_grad()
    def renormalize(self, stats: Stats) -> None:
        """Move to the state statistics of more data keeping V (the first layer re-expressed for
        the new units); `value_scale` stays."""
        renormalize_state_input(self.net[0], self.state_mean, self.state_std, stats)

    def forward(self, states: Tensor) -> Tensor:
        """states [..., S] -> V [...]."""
        x = (states - self.state_mean) / self.state_std
        return self.net(x).squeeze(-1) * self.value_scale


class CriticLearner:
    """Owns the online critic, its slow target copy and the optimiser.

    `value` (the hook for `MPCAgent(terminal_value=...)` and `PolicyLearner(critic=...)`) reads the
    *target* net: it moves by at most tau per update, so the planner's and the policy's objectives
    do not jump with each critic step, and it is the same function the TD targets bootstrap from.
    It stays differentiable with respect to the states (the policy learner backpropagates through
    V(s[H])) while its parameters never receive gradients.
    """

    def __init__(
        self,
        critic: Critic,
        gamma: float = 0.99,
        lambda_: float = 0.95,
        tau: float = 0.02,
        lr: float = 3e-4,
        grad_clip: float = 100.0,
        device: torch.device | str = "cpu",
    ) -> None:
        if not (0.0 < gamma <= 1.0 and 0.0 <= lambda_ <= 1.0 and 0.0 < tau <= 1.0):
            raise ValueError("need gamma in (0, 1], lambda_ in [0, 1] and tau in (0, 1]")
        if lr <= 0 or grad_clip <= 0:
            raise ValueError("lr and grad_clip must be positive")
        self.critic = critic.to(device)
        self.device = torch.device(device)
        self.gamma, self.lambda_, self.tau, self.grad_clip = gamma, lambda_, tau, grad_clip
        self.target = copy.deepcopy(self.critic).requires_grad_(False).eval()
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.total_steps = 0
        self.skipped_updates = 0

    def renormalize(self, stats: Stats) -> None:
        """Both nets to new state statistics, each keeping its function (`Critic.renormalize`)."""
        self.critic.renormalize(stats)
        self.target.renormalize(stats)

    def value(self, states: Tensor) -> Tensor:
        """Cost-to-go of states [..., S] -> [...] from the slow target net (see class doc)."""
        return self.target(states)

    def update_imagined(self, states: Tensor, costs: Tensor, continues: Tensor) -> Metrics:
        """One TD(lambda) step on trajectories: states [T+1, B, S], costs [T, B], continues [T, B].

        Inputs are detached: the critic learns values, it does not move the trajectories.
        The squared error is weighted by `alive_weights` and measured in `value_scale` units.
        """
        states, costs = states.detach().to(self.device), costs.detach().to(self.device)
        continues = continues.detach().to(self.device, costs.dtype)
        with torch.no_grad():
            targets = td_lambda_targets(
                costs, self.target(states), continues, self.gamma, self.lambda_
            )
            weights = alive_weights(continues)[:-1]
        self.critic.train()
        predicted = self.critic(states[:-1])
        mean = lambda x: (weights * x).sum() / weights.sum().clamp_min(1.0)  # noqa: E731
        loss = mean(((predicted - targets) / self.critic.value_scale).square())
        params = list(self.critic.parameters())
        grad_norm = guarded_step(loss, params, self.optimizer, self.grad_clip)
        if grad_norm is None:
            self.skipped_updates += 1
            return {"skipped_updates": float(self.skipped_updates)}
        self._polyak()
        self.total_steps += 1
        return {
            "loss": loss.item(),
            "value": mean(predicted.detach()).item(),
            "target": mean(targets).item(),
            "grad_norm": grad_norm.item(),
        }

    def update_real(self, window: Window, cost: CostFn | None = None) -> Metrics:
        """One TD(lambda) step on real windows (obs [H+1, B, S], action [H, B, A]).

        `cost` must be the cost the policy and the planner optimise (e.g. a task's
        `planning_cost`); None uses the recorded cost, minus the env reward. Windows never cross
        episodes, so a time-limit truncation simply bootstraps from the last next state.
        """
        window = window.to(self.device)
        costs = (
            -window.reward
            if cost is None
            else cost(window.obs[:-1], window.action, window.obs[1:]).detach()
        )
        return self.update_imagined(window.obs, costs, (~window.terminated).to(costs.dtype))

    @torch.no_grad()
    def _polyak(self) -> None:
        """target <- (1 - tau) target + tau online; buffers (normalisation) copied as they are."""
        for p_target, p_online in zip(self.target.parameters(), self.critic.parameters(),
                                      strict=True):  # fmt: skip
            p_target.lerp_(p_online, self.tau)
        for b_target, b_online in zip(self.target.buffers(), self.critic.buffers(), strict=True):
            b_target.copy_(b_online)
