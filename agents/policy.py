"""A policy learned by backpropagation through the frozen world model (PPUU, Henaff et al. 2019).

From real states drawn from the replay data, the policy is unrolled H steps in imagination
(z ~ N(0, I)) and trained on the discounted task cost, a terminal cost-to-go from the critic, and
an uncertainty penalty that keeps it where the model has seen data: without it the policy finds
states where the model is wrong in its favour (model exploitation). The result acts in one small
MLP forward pass, and can seed the planner (`PolicyProposal`).

Time-major conventions as in `agents/mpc.py`: actions [T, B, A], states [T+1, B, S] (s[0..T]).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch
from torch import Tensor, nn

from worldmodel.cost.risk import MEAN, Risk
from worldmodel.cost.trajectory import Trajectory, TrajectoryCost, TrajectoryTerms, imagine
from worldmodel.data.store import Stats
from worldmodel.forward.layers import eval_mode, mlp, renormalize_state_input
from worldmodel.optim import guarded_step
from worldmodel.perception import Perception
from worldmodel.types import Decision, Generators, WorldModel

Metrics = dict[str, float]
LATENT_MODES = ("prior", "zero")
SINGLE = -1  # the env key of `act`, beside act_batch's 0..E-1
log = logging.getLogger(__name__)


class Policy(nn.Module):
    """Deterministic policy a = tanh(MLP(normalised s)), so actions always lie in [-1, 1]."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        if min(state_dim, action_dim, hidden, layers) <= 0:
            raise ValueError("state_dim, action_dim, hidden and layers must be positive")
        self.state_dim, self.action_dim = state_dim, action_dim
        self.net = mlp(state_dim, hidden, action_dim, layers, dropout=0.0)
        head = self.net[-1]
        assert isinstance(head, nn.Linear)
        with torch.no_grad():
            # Start near the centre of the box: a saturated tanh would pass no gradient.
            head.weight.mul_(0.1)
            head.bias.zero_()
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))

    def set_normalization(self, stats: Stats) -> None:
        """Copy the data's state statistics into the buffers (they travel with `state_dict`)."""
        self.state_mean.copy_(stats.state_mean)
        self.state_std.copy_(stats.state_std)

    def renormalize(self, stats: Stats) -> None:
        """Move to the statistics of more data keeping the policy's function (its first layer
        re-expressed for the new units)."""
        renormalize_state_input(self.net[0], self.state_mean, self.state_std, stats)

    def forward(self, states: Tensor) -> Tensor:
        """states [..., S] -> actions [..., A] in [-1, 1]."""
        return torch.tanh(self.net((states - self.state_mean) / self.state_std))


class PolicyAgent:
    """Acts by the policy alone: one MLP forward, no planning (well under 1 ms on a CPU).

    `noise` > 0 adds Gaussian exploration (clipped to the box) for data collection; evaluate with
    `noise=0`. If the policy outputs NaN or inf (diverged weights, extreme states) the agent falls
    back to its previous action, else zero, counts it in `fallbacks` and logs it: the action is
    always finite and within [-1, 1].
    """

    horizon = 1

    def __init__(
        self,
        policy: Policy,
        perception: Perception | None = None,
        noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.policy, self.noise, self.seed = policy, noise, seed
        self.perception = perception or Perception(policy.state_dim, policy.state_mean.device)
        self.rng = np.random.default_rng(seed)
        self.fallbacks = 0  #: decisions (since construction) that used the safe action
        self.last: Decision | None = None
        self.last_batch: list[Decision] = []  #: act_batch's latest decision of each env
        self._previous: dict[int, np.ndarray] = {}  # each env's last action

    def generators(self) -> Generators:
        """The exploration noise's generator."""
        return {"noise": self.rng}

    def reset(self) -> None:
        """Forget the previous actions (the fallback of a non-finite output); a new episode."""
        self._previous, self.last, self.last_batch = {}, None, []

    def reset_envs(self, envs: list[int]) -> None:
        """Forget these envs' previous actions (their episodes ended)."""
        for e in envs:
            self._previous.pop(e, None)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """obs [S] -> action [A] (float32, finite, in [-1, 1]): one env of `act_batch`."""
        action = self.act_batch(np.asarray(obs)[None], envs=[SINGLE])[0]
        self.last = self.last_batch[0]
        return action

    def act_batch(self, obs: np.ndarray, envs: list[int] | None = None) -> np.ndarray:
        """obs [E, S] of envs `envs` (default 0..E-1) -> actions [E, A], in one forward pass;
        `last_batch` holds each row's decision."""
        start = time.perf_counter()
        ids = list(range(len(obs))) if envs is None else list(envs)
        states = torch.stack([self.perception(o) for o in obs])
        with torch.inference_mode():
            actions = self.policy(states).cpu().numpy()
        if self.noise > 0:
            actions = actions + self.noise * self.rng.standard_normal(actions.shape)
        actions = np.clip(actions, -1.0, 1.0).astype(np.float32)
        seconds = (time.perf_counter() - start) / len(ids)
        self.last_batch = []
        for row, env in enumerate(ids):
            fallback = not np.isfinite(actions[row]).all()
            if fallback:
                actions[row] = self._fallback(self._previous.get(env))
            self._previous[env] = actions[row].copy()
            nan = float("nan")
            self.last_batch.append(Decision(actions[row].copy(), nan, nan, seconds, fallback))
        return actions

    def _fallback(self, previous: np.ndarray | None) -> np.ndarray:
        """The env's previous action, else zero, counted and logged (1st, 2nd, 4th, ...: no
        flood)."""
        self.fallbacks += 1
        if self.fallbacks & (self.fallbacks - 1) == 0:
            log.warning(
                "policy: non-finite action; used the %s instead (%d fallbacks so far)",
                "previous action" if previous is not None else "zero action",
                self.fallbacks,
            )
        if previous is not None:
            return previous.copy()
        return np.zeros(self.policy.action_dim, np.float32)


class PolicyProposal:
    """`MPCAgent(proposal=...)` hook: the policy rolled through the model from a state.

    latent 'zero' uses the prior's mean (z = 0, deterministic, the most likely future); 'prior'
    draws z ~ N(0, I) with its own seeded generator.
    """

    def __init__(self, policy: Policy, model: WorldModel, latent: str = "zero", seed: int = 0):
        if latent not in LATENT_MODES:
            raise ValueError(f"latent must be one of {LATENT_MODES}, got {latent!r}")
        self.policy, self.model, self.latent = policy, model, latent
        self.generator = torch.Generator(device=policy.state_mean.device).manual_seed(seed)

    @torch.no_grad()
    def __call__(self, state: Tensor, horizon: int) -> Tensor:
        """state [S] -> actions [T, A] in [-1, 1]."""
        z = self.model.sample_prior(horizon, 1, generator=self.generator)
        if self.latent == "zero":
            z = torch.zeros_like(z)
        s, actions = state[None], []
        with eval_mode(self.model):
            for t in range(horizon):
                actions.append(self.policy(s)[0])
                s = self.model.step(s, actions[-1][None], z[t])
        return torch.stack(actions)


class PolicyLearner:
    """Trains `policy` to minimise the `TrajectoryCost` J of its imagined rollouts.

    Rollouts start from real states, z ~ prior, dropout off. Each start state is rolled out
    `latent_samples` times, each with its own z, and its J over those futures is combined by
    `risk` (their mean, or the CVaR of the worst share); the loss is the mean over start states.
    The model's parameters stay frozen: gradients reach the policy through the model's states,
    and `backward(inputs=policy params)` leaves the model (and critic) untouched without
    flipping flags on a model its trainer shares. A non-finite loss or gradient skips the update.
    """

    def __init__(
        self,
        policy: Policy,
        model: WorldModel,
        trajectory_cost: TrajectoryCost,
        *,
        horizon: int = 15,
        lr: float = 3e-4,
        grad_clip: float = 10.0,
        latent_samples: int = 1,
        risk: Risk = MEAN,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if horizon <= 0 or lr <= 0 or grad_clip <= 0 or latent_samples <= 0:
            raise ValueError("horizon, lr, grad_clip and latent_samples must be positive")
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.model, self.trajectory_cost = model, trajectory_cost
        self.horizon, self.grad_clip = horizon, grad_clip
        self.latent_samples, self.risk = latent_samples, risk
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.total_steps = 0
        self.skipped_updates = 0
        self.last_rollout: tuple[Trajectory, TrajectoryTerms] | None = None

    def imagine(self, start_states: Tensor) -> Trajectory:
        """The policy rolled H steps from start_states [B, S], each `latent_samples` times with
        its own z ~ prior (K copies side by side: batch index k * B + b), graph kept."""
        s = start_states.to(self.device).repeat(self.latent_samples, 1)
        z = self.model.sample_prior(self.horizon, s.shape[0], generator=self.generator)
        return imagine(self.model, self.policy, s, z)

    def update(self, start_states: Tensor) -> Metrics:
        """One gradient step from real start states [B, S]; keeps the rollout in `last_rollout`
        (detached) for the critic."""
        trajectory = self.imagine(start_states)
        terms = self.trajectory_cost(trajectory)
        loss = self.risk(terms.total.view(self.latent_samples, -1)).mean()
        if not loss.requires_grad:
            raise ValueError(
                "the imagined objective does not depend on the policy: the cost has no gradient "
                "(e.g. InvertedPendulum's alive reward); use the task's planning_cost"
            )
        params = list(self.policy.parameters())
        grad_norm = guarded_step(loss, params, self.optimizer, self.grad_clip)
        if grad_norm is None:
            self.skipped_updates += 1
            return {"skipped_updates": float(self.skipped_updates)}
        self.total_steps += 1
        self.last_rollout = trajectory.detach(), _detached(terms)
        return _metrics(terms, trajectory) | {"loss": loss.item(), "grad_norm": grad_norm.item()}


def _detached(terms: TrajectoryTerms) -> TrajectoryTerms:
    """A copy of `terms` without the graph (astuple would deep-copy the tensors)."""
    values = {f.name: getattr(terms, f.name) for f in dataclasses.fields(terms)}
    return TrajectoryTerms(**{k: None if v is None else v.detach() for k, v in values.items()})


def _metrics(terms: TrajectoryTerms, trajectory: Trajectory) -> Metrics:
    """What a policy update logs: its imagined cost and return, terminal value, uncertainty."""
    horizon = trajectory.actions.shape[0]
    alive = terms.alive[:horizon]
    live = alive.sum().clamp_min(1.0)
    metrics = {
        # The task's cost alone, as J weighs it (no penalty, no terminal value).
        "imagined_cost": (terms.weights * terms.costs).sum(0).mean().item(),
        # Undiscounted, comparable with the real return over the same H steps.
        "imagined_return": -(alive * terms.costs).sum(0).mean().item(),
        "action_abs": trajectory.actions.abs().mean().item(),
    }
    if terms.value is not None:
        metrics["terminal_value"] = terms.value.mean().item()
    if terms.uncertainty is not None and terms.penalty is not None:
        metrics["uncertainty"] = ((alive * terms.uncertainty).sum() / live).item()
        metrics["uncertainty_penalty"] = ((alive * terms.penalty).sum() / live).item()
    return metrics
