"""A policy learned by backpropagation through the frozen world model (PPUU, Henaff et al. 2019).

From real states drawn from the replay data, the policy is unrolled H steps in imagination
(z ~ N(0, I)) and trained on the discounted task cost, a terminal cost-to-go from the critic, and
an uncertainty penalty that keeps it where the model has seen data: without it the policy finds
states where the model is wrong in its favour (model exploitation). The result acts in one small
MLP forward pass, and can seed the planner (`PolicyProposal`).

Time-major conventions as in `agents/mpc.py`: actions [T, B, A], states [T+1, B, S] (s[0..T]).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from envs.costs import CostFn, TerminationFn
from worldmodel.data import Stats, Window
from worldmodel.errors import DataError
from worldmodel.forward import ForwardModel, mlp

Metrics = dict[str, float]
ValueFn = Callable[[Tensor], Tensor]
"""Terminal cost-to-go: states [..., S] -> [...] (e.g. `CriticLearner.value`)."""
LATENT_MODES = ("prior", "zero")
log = logging.getLogger(__name__)


class Dynamics(Protocol):
    """What imagination needs of a model; `ForwardModel` is one (tests use hand-written ones)."""

    def step(
        self,
        s: Tensor,
        a: Tensor,
        z: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...

    def sample_prior(self, *shape: int, generator: torch.Generator | None = None) -> Tensor: ...


@contextmanager
def eval_mode(model: object) -> Iterator[None]:
    """Dropout off while imagining (the mean model), each module's mode restored afterwards.

    The model is shared with its trainer, so modes are put back exactly as they were.
    """
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    before = [m.training for m in modules]
    for m in modules:
        m.training = False
    try:
        yield
    finally:
        for m, mode in zip(modules, before, strict=True):
            m.training = mode


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

    def __init__(self, policy: Policy, noise: float = 0.0, seed: int = 0) -> None:
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.policy, self.noise, self.seed = policy, noise, seed
        self.rng = np.random.default_rng(seed)
        self.fallbacks = 0  #: decisions (since construction) that used the safe action
        self.last_fallback = False  #: whether the latest decision used it
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the previous action (the fallback of a non-finite output); a new episode."""
        self._previous, self.last_fallback = None, False

    def act(self, obs: np.ndarray) -> np.ndarray:
        """obs [S] -> action [A] (float32, finite, in [-1, 1])."""
        state = torch.from_numpy(np.asarray(obs, np.float32)).to(self.policy.state_mean.device)
        if state.shape != (self.policy.state_dim,):
            raise DataError(
                f"observation has shape {tuple(state.shape)} but the policy expects "
                f"({self.policy.state_dim},); is this the env the policy was trained on?"
            )
        if not torch.isfinite(state).all():
            raise DataError("observation contains NaN or inf; check the env or its wrappers")
        with torch.inference_mode():
            action = self.policy(state).cpu().numpy()
        if self.noise > 0:
            action = action + self.noise * self.rng.standard_normal(action.shape)
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        self.last_fallback = not np.isfinite(action).all()
        if self.last_fallback:
            action = (
                self._previous.copy()
                if self._previous is not None
                else np.zeros(self.policy.action_dim, np.float32)
            )
            self.fallbacks += 1
            if self.fallbacks & (self.fallbacks - 1) == 0:  # 1st, 2nd, 4th, ...: no flood
                log.warning(
                    "policy: non-finite action; used the %s instead (%d fallbacks so far)",
                    "previous action" if self._previous is not None else "zero action",
                    self.fallbacks,
                )
        self._previous = action.copy()
        return action


class PolicyProposal:
    """`MPCAgent(proposal=...)` hook: the policy rolled through the model from a state.

    latent 'zero' uses the prior's mean (z = 0, deterministic, the most likely future); 'prior'
    draws z ~ N(0, I) with its own seeded generator.
    """

    def __init__(self, policy: Policy, model: Dynamics, latent: str = "zero", seed: int = 0):
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


class UncertaintyPenalty:
    """PPUU's uncertainty cost: hinge on the model's epistemic uncertainty, in units of data.

    U[t] is the variance of the model's predictions over `masks` dropout masks (summed over the
    normalised state dims, `ForwardModel.uncertainty`). Its scale depends on the model, the task and
    the step t (variance compounds along a rollout), so a raw weight would not transfer. As in PPUU
    (`estimate_uncertainty_stats` in their code) we measure U on real data -- the model unrolled
    from real s[0] under the actions actually taken -- and normalise by its mean and std there,
    here per step t. The penalty relu((U - mean[t]) / std[t] - threshold) is then about zero on
    trajectories like those in the data and grows linearly once the policy leaves them; the hinge
    lets the policy use all the certainty the data gives, rather than seek ever lower variance.

    Recalibrate after each refit of the model: its uncertainty changes with the data.
    """

    def __init__(self, model: ForwardModel, masks: int = 8, threshold: float = 1.0) -> None:
        if masks < 2:
            raise ValueError(f"masks must be >= 2 to estimate a variance, got {masks}")
        self.model, self.masks, self.threshold = model, masks, threshold
        self.mean: Tensor | None = None  # [T] per-step mean of U on real rollouts
        self.std: Tensor | None = None  # [T]

    @property
    def horizon(self) -> int:
        """Longest rollout the calibration covers (0 before `calibrate`)."""
        return 0 if self.mean is None else self.mean.shape[0]

    def raw(self, s0: Tensor, actions: Tensor, z: Tensor | None = None) -> Tensor:
        """U: s0 [B, S], actions [T, B, A], z [T, B, Z] (None: prior) -> [T, B], differentiable."""
        return self.model.uncertainty(s0, actions, self.masks, z)

    @torch.no_grad()
    def calibrate(self, window: Window, generator: torch.Generator | None = None) -> Metrics:
        """Measure U on real windows (obs [H+1, B, S], action [H, B, A]); H >= the policy horizon.

        Use a few hundred windows: the std must be estimated, not guessed.
        """
        window = window.to(self.model.device)
        with eval_mode(self.model):
            z = self.model.sample_prior(*window.action.shape[:2], generator=generator)
            u = self.raw(window.obs[0], window.action, z)
        self.mean = u.mean(1)
        self.std = u.std(1).clamp_min(1e-6 * self.mean.abs().max().item() + 1e-12)
        return {"mean": self.mean.mean().item(), "std": self.std.mean().item()}

    def normalized(self, u: Tensor) -> Tensor:
        """U [T, B] -> (U - mean[t]) / std[t], [T, B]."""
        if self.mean is None or self.std is None:
            raise RuntimeError("UncertaintyPenalty used before calibrate(); calibrate on real data")
        if u.shape[0] > self.horizon:
            raise ValueError(
                f"rollout of {u.shape[0]} steps but calibrated on {self.horizon}; "
                "calibrate with windows at least as long as the policy horizon"
            )
        horizon = u.shape[0]
        return (u - self.mean[:horizon, None]) / self.std[:horizon, None]

    def __call__(self, u: Tensor) -> Tensor:
        """Hinge penalty [T, B] from U [T, B] (see class doc)."""
        return torch.relu(self.normalized(u) - self.threshold)


@dataclass(frozen=True)
class Imagined:
    """One batch of imagined trajectories, detached (what the critic learns from).

    states [T+1, B, S]; actions [T, B, A]; costs [T, B]; continues [T, B] (0 where s[t+1] ended).
    """

    states: Tensor
    actions: Tensor
    costs: Tensor
    continues: Tensor


class PolicyLearner:
    """Trains `policy` on J = sum_t gamma^t alive[t] (c[t] + w_u P[t]) + gamma^H alive[H] V(s[H]).

    c is `cost`, P the `UncertaintyPenalty` hinge and V the `critic` hook (None: no terminal
    cost). The model's parameters stay frozen: gradients reach the policy through the model's
    states, and `backward(inputs=policy params)` leaves the model (and critic) untouched without
    flipping flags on a model its trainer shares. A non-finite loss or gradient skips the update.
    """

    def __init__(
        self,
        policy: Policy,
        model: Dynamics,
        cost: CostFn,
        terminated: TerminationFn | None = None,
        critic: ValueFn | None = None,
        uncertainty: UncertaintyPenalty | None = None,
        *,
        horizon: int = 15,
        gamma: float = 0.99,
        uncertainty_weight: float = 0.0,
        lr: float = 3e-4,
        grad_clip: float = 10.0,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if horizon <= 0 or not 0.0 < gamma <= 1.0 or uncertainty_weight < 0:
            raise ValueError("need horizon > 0, gamma in (0, 1] and uncertainty_weight >= 0")
        if lr <= 0 or grad_clip <= 0:
            raise ValueError("lr and grad_clip must be positive")
        if uncertainty_weight > 0 and uncertainty is None:
            raise ValueError("uncertainty_weight > 0 needs an UncertaintyPenalty")
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.model, self.cost, self.terminated, self.critic = model, cost, terminated, critic
        self.uncertainty, self.uncertainty_weight = uncertainty, uncertainty_weight
        self.horizon, self.gamma, self.grad_clip = horizon, gamma, grad_clip
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.total_steps = 0
        self.skipped_updates = 0
        self.last_rollout: Imagined | None = None

    def imagine(self, start_states: Tensor) -> tuple[Imagined, Tensor, Tensor]:
        """Roll the policy H steps from start_states [B, S] (z ~ prior, dropout off).

        Returns the trajectory (with gradients, not yet detached) and the z [T, B, Z] and
        alive weights [T+1, B] it used.
        """
        s = start_states.to(self.device)
        z = self.model.sample_prior(self.horizon, s.shape[0], generator=self.generator)
        states, actions = [s], []
        with eval_mode(self.model):
            for t in range(self.horizon):
                actions.append(self.policy(s))
                s = self.model.step(s, actions[-1], z[t])
                states.append(s)
        states_t, actions_t = torch.stack(states), torch.stack(actions)
        costs = self.cost(states_t[:-1], actions_t, states_t[1:])
        continues = (
            (~self.terminated(states_t[1:])).to(costs.dtype)
            if self.terminated is not None
            else torch.ones_like(costs)
        )
        # alive[t]: s[t] reached before any termination; alive[H] gates the terminal value.
        alive = torch.cumprod(torch.cat([torch.ones_like(continues[:1]), continues]), 0)
        return Imagined(states_t, actions_t, costs, continues), z, alive

    def update(self, start_states: Tensor) -> Metrics:
        """One gradient step from real start states [B, S]; keeps the rollout in `last_rollout`."""
        traj, z, alive = self.imagine(start_states)
        horizon = self.horizon
        discount = self.gamma ** torch.arange(
            horizon + 1, device=self.device, dtype=traj.costs.dtype
        )
        weights = discount[:horizon, None] * alive[:horizon]
        task_cost = (weights * traj.costs).sum(0)
        loss = task_cost
        metrics: Metrics = {}
        if self.critic is not None:
            terminal = discount[-1] * alive[-1] * self.critic(traj.states[-1])
            loss = loss + terminal
            metrics["terminal_value"] = terminal.mean().item()
        if self.uncertainty is not None:
            # As in PPUU: the policy's actions replayed open loop under each dropout mask, so U
            # measures how much the model's own futures disagree along this trajectory.
            with eval_mode(self.model), torch.set_grad_enabled(self.uncertainty_weight > 0):
                u = self.uncertainty.raw(traj.states[0], traj.actions, z)
                penalty = self.uncertainty(u)
            loss = loss + self.uncertainty_weight * (weights * penalty).sum(0)
            live = alive[:horizon].sum().clamp_min(1.0)
            metrics["uncertainty"] = ((alive[:horizon] * u).sum() / live).item()
            metrics["uncertainty_penalty"] = ((alive[:horizon] * penalty).sum() / live).item()
        loss = loss.mean()
        if not loss.requires_grad:
            raise ValueError(
                "the imagined objective does not depend on the policy: the cost has no gradient "
                "(e.g. InvertedPendulum's alive reward); use the task's planning_cost"
            )
        params = list(self.policy.parameters())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        grad_norm = nn.utils.clip_grad_norm_(params, self.grad_clip)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            self.skipped_updates += 1
            self.optimizer.zero_grad(set_to_none=True)
            return {"skipped_updates": float(self.skipped_updates)}
        self.optimizer.step()
        self.total_steps += 1
        self.last_rollout = Imagined(
            traj.states.detach(), traj.actions.detach(), traj.costs.detach(), traj.continues
        )
        return metrics | {
            "loss": loss.item(),
            "imagined_cost": task_cost.mean().item(),
            # Undiscounted, comparable with the real return over the same H steps.
            "imagined_return": -(alive[:horizon] * traj.costs).sum(0).mean().item(),
            "action_abs": traj.actions.abs().mean().item(),
            "grad_norm": grad_norm.item(),
        }
