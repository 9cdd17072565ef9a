"""Shared cases of the trainer tests: a linear system's store, a trainer whose losses go NaN."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from worldmodel.data.store import EpisodeStore
from worldmodel.forward.fit import FitSchedule, ModelTrainer
from worldmodel.forward.model import ForwardModel, LossTerms


def _store(episodes: int = 12, length: int = 20, seed: int = 0) -> EpisodeStore:
    rng = np.random.default_rng(seed)
    store = EpisodeStore(2, 1)
    for _ in range(episodes):
        x, obs, act, nxt = rng.uniform(-1, 1, 2).astype(np.float32), [], [], []
        for _ in range(length):
            a = rng.uniform(-1, 1, 1).astype(np.float32)
            obs.append(x), act.append(a)
            x = np.array([[0.9, 0.1], [0.0, 0.9]], np.float32) @ x + np.array([0.0, 0.1]) * a
            nxt.append(x)
        no = np.zeros(length, bool)
        store.add_episode(np.array(obs), np.array(act), np.zeros(length), np.array(nxt), no, no)
    return store


def _trainer(bad: Callable[[int], bool], max_consecutive_skips: int | None = None) -> ModelTrainer:
    """A trainer whose training loss is multiplied by NaN when `bad(call)` (validation is clean);
    `max_consecutive_skips` None leaves the trainer's default."""
    torch.manual_seed(0)
    store = _store()
    model = ForwardModel(2, 1, latent_dim=0, hidden=16, layers=1, dropout=0.0)
    model.set_normalization(store.stats())
    real, calls = model.loss, [0]

    def loss(window, generator=None, score_all=False) -> LossTerms:
        terms = real(window, generator, score_all)
        if not model.training:
            return terms
        calls[0] += 1
        if not bad(calls[0]):
            return terms
        nan = torch.tensor(float("nan"))
        return LossTerms(terms.loss * nan, terms.reconstruction * nan, terms.kl, terms.energy)

    model.loss = loss  # type: ignore[method-assign]
    limit = (
        {} if max_consecutive_skips is None else {"max_consecutive_skips": max_consecutive_skips}
    )
    return ModelTrainer(model, lr=1e-2, seed=0, **limit)


def _fit(trainer: ModelTrainer, log=None, max_steps: int = 200, eval_every: int = 1000):
    store = _store()
    train, val = store.split(0.25, 0)
    schedule = FitSchedule(
        horizon=3, batch_size=16, max_steps=max_steps, eval_every=eval_every, patience=100
    )
    return trainer.fit(train, val, schedule, log=log)
