"""The learners' updates in `wm run`: policy and critic updates, and updates interleaved with env
steps at a set update-to-data ratio (`loop.update_every` > 0) instead of a refit per episode.

Interleaved updates are how MBPO, TD-MPC2 and DreamerV3 train for long budgets: a refit that
early-stops on validation costs more the more data there is, while `model_updates` gradient
steps every `update_every` env steps cost the same at 1k and at 100k steps (the store samples a
batch in constant time). As in TD-MPC2, an episode's steps are trained on once it has ended and
is in the store.
"""

from __future__ import annotations

import numpy as np
import torch

from agents.app.runs.loop_state import Learners
from agents.configurator.assemble import PolicyParts, penalty_horizon
from agents.configurator.config import Config
from worldmodel.cost.learned import CostStats
from worldmodel.data.store import EpisodeStore
from worldmodel.forward.fit import ModelTrainer, split_episodes
from worldmodel.optim import rescale_moments

Metrics = dict[str, float]


def train_policy(
    parts: PolicyParts, store: EpisodeStore, batch_size: int, updates: int, rng: np.random.Generator
) -> Metrics:
    """`updates` policy and critic updates from `batch_size` real start states each, the critic
    on the policy's rollouts; the mean of each metric."""
    metrics: dict[str, list[float]] = {}
    obs = store.data["obs"]
    device = parts.policy_learner.device
    for _ in range(updates):
        starts = torch.from_numpy(obs[rng.integers(len(obs), size=batch_size)]).to(device)
        policy_metrics = parts.policy_learner.update(starts)
        rollout = parts.policy_learner.last_rollout
        critic_metrics = {}
        if rollout is not None:
            trajectory, terms = rollout
            critic_metrics = parts.critic_learner.update_imagined(
                trajectory.states, terms.costs, terms.continues
            )
        for prefix, values in (("policy", policy_metrics), ("critic", critic_metrics)):
            for key, value in values.items():
                metrics.setdefault(f"{prefix}/{key}", []).append(value)
    return {key: float(np.mean(values)) for key, values in metrics.items()}


def renormalize(learners: Learners, store: EpisodeStore) -> None:
    """Every learner normalised by `store`'s statistics from now on, each keeping its function
    (`loop.renormalize`): the world model, the learned cost, the policy and both critic nets."""
    stats, parts, cost = store.stats(), learners.parts, learners.cost_trainer
    moves = [
        (learners.model, learners.trainer.optimizer, lambda: learners.model.renormalize(stats))
    ]
    if cost is not None:
        learned = cost.model
        moves.append(
            (learned, cost.optimizer, lambda: learned.renormalize(stats, CostStats.of(store)))
        )
    if parts is not None:
        moves.append(
            (parts.policy, parts.policy_learner.optimizer, lambda: parts.policy.renormalize(stats))
        )
        critic = parts.critic_learner
        moves.append((critic.critic, critic.optimizer, lambda: critic.renormalize(stats)))
    for module, optimizer, move in moves:
        # weights only: biases move additively (and the ensemble's are 3-d)
        before = {p: p.detach().clone() for n, p in module.named_parameters() if "bias" not in n}
        move()
        rescale_moments(optimizer, before)


class StepUpdates:
    """The updates due as env steps are taken: at every multiple of `loop.update_every` real
    steps, `loop.model_updates` gradient steps of the world model (and of the learned cost, on
    one-step windows) and, once the uncertainty penalty is calibrated, `loop.policy_updates`
    policy and critic updates, all on the training episodes of the store.

    Which updates are due depends only on the step count, so a resumed run makes the same ones.
    """

    def __init__(self, config: Config, learners: Learners, store: EpisodeStore, steps: int) -> None:
        """`steps`: the real env steps taken so far (the updates due up to them are made)."""
        self.config, self.learners, self.store, self.steps = config, learners, store, steps
        self._metrics: dict[str, list[float]] = {}
        self._train: EpisodeStore | None = None
        self._split_of = (-1, -1)  # (next episode, length) of the store the split is of

    def advance(self, steps: int) -> None:
        """Make the updates due up to `steps` real env steps."""
        every = self.config.loop.update_every
        for _ in range(steps // every - self.steps // every):
            self.update()
        self.steps = steps

    def update(self) -> None:
        """One round of updates."""
        loop, learners = self.config.loop, self.learners
        train = self._training_episodes()
        horizon = self.config.train.horizon
        self._fit(learners.trainer, train, horizon, "train/")
        if learners.cost_trainer is not None:
            self._fit(learners.cost_trainer, train, 1, "cost/train/")
        calibrated = learners.penalty.horizon >= penalty_horizon(self.config)
        if learners.parts is not None and calibrated:
            batch, rng = self.config.policy.batch_size, learners.policy_rng
            self._record(train_policy(learners.parts, self.store, batch, loop.policy_updates, rng))

    def drain(self) -> Metrics:
        """The mean of each metric since the last call (for the logs)."""
        metrics = {key: float(np.mean(values)) for key, values in self._metrics.items()}
        self._metrics = {}
        return metrics

    def _fit(self, trainer: ModelTrainer, train: EpisodeStore, horizon: int, prefix: str) -> None:
        batch = self.config.train.batch_size
        for _ in range(self.config.loop.model_updates):
            window = train.sample(batch, horizon, trainer.rng, terminal=True)
            self._record({f"{prefix}{k}": v for k, v in trainer.update(window).items()})
            if trainer.diverging:
                raise trainer.diverged_error("the last finite weights were kept")

    def _training_episodes(self) -> EpisodeStore:
        """The training split of the store (its held-out episodes are for validation), made
        again only when the store has changed."""
        version = (self.store.next_episode, len(self.store))
        if self._train is None or version != self._split_of:
            fraction, seed = self.config.train.val_fraction, self.config.seed
            self._train, _ = split_episodes(self.store, fraction, seed)
            self._split_of = version
        return self._train

    def _record(self, metrics: Metrics) -> None:
        for key, value in metrics.items():
            self._metrics.setdefault(key, []).append(value)
