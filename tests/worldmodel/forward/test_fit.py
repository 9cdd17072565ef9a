"""Numerical guards of the model trainer: non-finite updates are skipped, counted and logged;
too many in a row stop the fit with `TrainingDivergedError` and the best weights restored."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch

from worldmodel.data.store import EpisodeStore
from worldmodel.errors import TrainingDivergedError, WorldModelError
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


def _trainer(bad: Callable[[int], bool], max_consecutive_skips: int = 50) -> ModelTrainer:
    """A trainer whose training loss is multiplied by NaN when `bad(call)` (validation is clean)."""
    torch.manual_seed(0)
    store = _store()
    model = ForwardModel(2, 1, latent_dim=0, hidden=16, layers=1, dropout=0.0)
    model.set_normalization(store.stats())
    real, calls = model.loss, [0]

    def loss(window, generator=None) -> LossTerms:
        terms = real(window, generator)
        if not model.training:
            return terms
        calls[0] += 1
        if not bad(calls[0]):
            return terms
        nan = torch.tensor(float("nan"))
        return LossTerms(terms.loss * nan, terms.reconstruction * nan, terms.kl)

    model.loss = loss  # type: ignore[method-assign]
    return ModelTrainer(model, lr=1e-2, seed=0, max_consecutive_skips=max_consecutive_skips)


def _fit(trainer: ModelTrainer, log=None, max_steps: int = 200, eval_every: int = 1000):
    store = _store()
    train, val = store.split(0.25, 0)
    schedule = FitSchedule(
        horizon=3, batch_size=16, max_steps=max_steps, eval_every=eval_every, patience=100
    )
    return trainer.fit(train, val, schedule, log=log)


def test_a_skipped_update_leaves_weights_and_optimizer_unchanged() -> None:
    trainer = _trainer(lambda call: call == 2)
    store = _store()
    trainer.update(store.sample(16, 3, trainer.rng))
    weights = copy.deepcopy(trainer.model.state_dict())
    optimizer = copy.deepcopy(trainer.optimizer.state_dict())
    metrics = trainer.update(store.sample(16, 3, trainer.rng))
    assert metrics == {"skipped_updates": 1.0}
    assert trainer.skipped_updates == 1 and trainer.consecutive_skips == 1
    assert trainer.total_steps == 1
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    state = trainer.optimizer.state_dict()["state"]
    for index, values in optimizer["state"].items():
        for name, value in values.items():
            assert torch.equal(torch.as_tensor(state[index][name]), torch.as_tensor(value))


def test_scattered_skips_are_counted_and_logged_but_do_not_stop_the_fit() -> None:
    trainer = _trainer(lambda call: call % 3 == 0)
    logged: list[dict[str, float]] = []
    result = _fit(trainer, log=lambda metrics, step: logged.append(metrics), eval_every=50)
    assert result.steps == 200
    assert trainer.skipped_updates == 66 and trainer.total_steps == 134
    assert [m["charts/skipped_updates"] for m in logged] == [16.0, 33.0, 50.0, 66.0]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_repeated_failures_stop_the_fit_with_the_best_weights_restored() -> None:
    # Ten good updates, then only NaN: no validation ran in between, so the best weights are
    # the ones the fit started from.
    trainer = _trainer(lambda call: call > 10)
    before = copy.deepcopy(trainer.model.state_dict())
    logged: list[dict[str, float]] = []
    with pytest.raises(TrainingDivergedError) as info:
        _fit(trainer, log=lambda metrics, step: logged.append(metrics))
    message = str(info.value)
    assert isinstance(info.value, WorldModelError) and "\n" not in message
    assert "50 updates in a row" in message and "--train.lr" in message
    assert trainer.skipped_updates == 50 and trainer.total_steps == 10
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert logged[-1] == {"charts/skipped_updates": 50.0}


def test_the_limit_is_configurable_and_counts_only_consecutive_skips() -> None:
    trainer = _trainer(lambda call: call > 3, max_consecutive_skips=5)
    with pytest.raises(TrainingDivergedError, match="5 updates in a row"):
        _fit(trainer)
    assert trainer.total_steps == 3 and trainer.skipped_updates == 5
    with pytest.raises(ValueError, match="max_consecutive_skips"):
        ModelTrainer(trainer.model, max_consecutive_skips=0)


def test_each_validation_logs_the_training_charts() -> None:
    logged: list[tuple[dict, int]] = []
    result = _fit(_trainer(lambda call: False), max_steps=20, eval_every=10,
                  log=lambda metrics, step: logged.append((metrics, step)))  # fmt: skip
    assert [step for _, step in logged] == [10, 20] and result.steps == 20
    for metrics, _ in logged:
        assert {"train/loss", "val/loss", "charts/learning_rate", "charts/samples_per_s"} <= set(
            metrics
        )
        assert metrics["charts/learning_rate"] == pytest.approx(1e-2)
        assert metrics["charts/samples_per_s"] > 0


def test_the_fit_stops_after_patience_validations_without_improvement() -> None:
    trainer = _trainer(lambda call: False)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.zero_()  # and lr 0: validation can never improve
    trainer.optimizer.param_groups[0]["lr"] = 0.0
    store = _store()
    train, val = store.split(0.25, 0)
    schedule = FitSchedule(horizon=3, batch_size=8, max_steps=100, eval_every=5, patience=2)
    result = trainer.fit(train, val, schedule)
    assert result.steps == 10 and result.stopped_early  # two validations, two strikes
    assert result.seconds > 0 and np.isfinite(result.best_val_loss)
    full = trainer.fit(train, val, FitSchedule(horizon=3, batch_size=8, max_steps=5,
                                               eval_every=5, patience=2))  # fmt: skip
    assert full.steps == 5 and not full.stopped_early
