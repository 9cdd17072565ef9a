"""`ModelTrainer.fit(resume=...)` continues a fit exactly, and `fit_world_model` is `fit` on the
documented split: a direct, fast version of what `tests/agents/app/test_train_resume.py` checks
through `wm train --resume`."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

import worldmodel.forward.fit as fit_module
from worldmodel.data.store import EpisodeStore
from worldmodel.forward.fit import (
    FitSchedule,
    FitState,
    ModelTrainer,
    fit_world_model,
    split_episodes,
)
from worldmodel.forward.model import ForwardModel

SCHEDULE = FitSchedule(horizon=3, batch_size=8, max_steps=12, eval_every=4, patience=100)


def _store(episodes: int = 8, length: int = 12, seed: int = 0) -> EpisodeStore:
    rng = np.random.default_rng(seed)
    store = EpisodeStore(2, 1)
    for _ in range(episodes):
        x, obs, act, nxt = rng.uniform(-1, 1, 2).astype(np.float32), [], [], []
        for _ in range(length):
            a = rng.uniform(-1, 1, 1).astype(np.float32)
            obs.append(x), act.append(a)
            x = (np.array([[0.9, 0.2], [-0.2, 0.9]]) @ x + np.array([0.0, 0.3]) * a).astype(
                np.float32
            )
            nxt.append(x)
        no = np.zeros(length, bool)
        store.add_episode(np.array(obs), np.array(act), np.zeros(length), np.array(nxt), no, no)
    return store


def _trainer(init_seed: int = 0, seed: int = 0) -> ModelTrainer:
    """A CVAE with dropout: its latents come from the trainer's generator, its dropout masks
    from torch's global RNG."""
    torch.manual_seed(init_seed)
    model = ForwardModel(2, 1, latent_dim=2, hidden=16, layers=2, dropout=0.1)
    model.set_normalization(_store().stats())
    return ModelTrainer(model, lr=1e-2, seed=seed)


class _Clock:
    """perf_counter for the fit module: time moves 0.25 s per training step, else stands still."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def tick(self, trainer: ModelTrainer) -> None:
        update = trainer.update

        def timed(window):
            self.now += 0.25
            return update(window)

        trainer.update = timed  # type: ignore[method-assign]


def _snapshot(trainer: ModelTrainer, state: FitState) -> dict[str, Any]:
    """What a caller saves beside the fit state: weights, optimiser, RNGs and counters."""
    return copy.deepcopy(
        {
            "state": dataclasses.replace(state),
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "generator": trainer.generator.get_state(),
            "rng": trainer.rng.bit_generator.state,
            "torch": torch.get_rng_state(),
            "counters": (trainer.total_steps, trainer.skipped_updates, trainer.consecutive_skips),
        }
    )


def _restore(trainer: ModelTrainer, saved: dict[str, Any]) -> FitState:
    trainer.model.load_state_dict(saved["model"])
    trainer.optimizer.load_state_dict(saved["optimizer"])
    trainer.generator.set_state(saved["generator"])
    trainer.rng.bit_generator.state = saved["rng"]
    torch.set_rng_state(saved["torch"])
    trainer.total_steps, trainer.skipped_updates, trainer.consecutive_skips = saved["counters"]
    return saved["state"]


class _Stop(Exception):
    pass


def test_a_resumed_fit_ends_exactly_where_an_uninterrupted_fit_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    monkeypatch.setattr(fit_module, "time", clock)
    train, val = _store().split(0.25, 0)

    whole = _trainer()
    clock.tick(whole)
    seen: list[tuple[int, float]] = []
    whole_result = whole.fit(
        train, val, SCHEDULE, on_checkpoint=lambda s: seen.append((s.steps, s.seconds))
    )
    assert seen == [(4, 1.0), (8, 2.0), (12, 3.0)]

    first = _trainer()
    clock.tick(first)
    saved: list[dict[str, Any]] = []

    def stop_at_first_checkpoint(state: FitState) -> None:
        saved.append(_snapshot(first, state))
        raise _Stop

    with pytest.raises(_Stop):
        first.fit(train, val, SCHEDULE, on_checkpoint=stop_at_first_checkpoint)

    torch.manual_seed(99)  # the process that resumes has other RNG states and weights
    second = _trainer(init_seed=1, seed=1)
    clock.tick(second)
    resume = _restore(second, saved[0])
    assert resume.steps == 4 and resume.seconds == 1.0 and resume.average
    average = copy.deepcopy(resume.average)
    after: list[tuple[int, float]] = []
    result = second.fit(
        train,
        val,
        SCHEDULE,
        resume=resume,
        on_checkpoint=lambda s: after.append((s.steps, s.seconds)),
    )
    assert after == [(8, 2.0), (12, 3.0)]
    assert result == whole_result and result.steps == 12 and result.seconds == 3.0
    assert second.total_steps == whole.total_steps == 12
    for key, value in whole.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[key], value), key
    assert resume.steps == 4  # the caller's state is not changed by the fit
    for key, value in average.items():
        assert torch.equal(resume.average[key], value), key


def test_the_same_trainer_seed_gives_the_same_fit_and_another_seed_another() -> None:
    train, val = _store().split(0.25, 0)
    fits = []
    for seed in (0, 0, 1):
        trainer = _trainer(seed=seed)
        torch.manual_seed(0)  # the same dropout masks for all three
        trainer.fit(train, val, SCHEDULE)
        fits.append(trainer.model.state_dict()["decoder.0.weight"])
    assert torch.equal(fits[0], fits[1]) and not torch.equal(fits[0], fits[2])


def test_fit_world_model_fits_on_the_documented_split_with_seed_zero_by_default() -> None:
    store = _store(episodes=10)
    direct = _trainer()
    torch.manual_seed(0)
    direct.fit(*split_episodes(store, SCHEDULE.val_fraction, 0), SCHEDULE)
    helper = _trainer()
    torch.manual_seed(0)
    result = fit_world_model(helper, store, SCHEDULE)
    assert result.steps == 12 and helper.total_steps == 12
    for key, value in direct.model.state_dict().items():
        assert torch.equal(helper.model.state_dict()[key], value), key
    other = _trainer()
    torch.manual_seed(0)
    fit_world_model(other, store, SCHEDULE, seed=1)
    assert split_episodes(store, 0.1, 1)[1].data["episode"].tolist() != (
        split_episodes(store, 0.1, 0)[1].data["episode"].tolist()
    )
    assert not torch.equal(other.model.state_dict()["decoder.0.weight"],
                           direct.model.state_dict()["decoder.0.weight"])  # fmt: skip


def test_fit_world_model_passes_its_schedule_and_options_on_and_without_a_schedule_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trainer = _trainer()
    store = _store()
    calls: list[tuple[tuple, dict]] = []

    def fit(*args, **kwargs):
        calls.append((args, kwargs))
        return "fitted"

    monkeypatch.setattr(trainer, "fit", fit)
    resume = FitState(4, 1.0, 0, {}, 2.0)
    log, on_checkpoint = (lambda metrics, step: None), (lambda state: None)
    options = dict(log=log, progress=True, resume=resume, on_checkpoint=on_checkpoint)
    assert fit_world_model(trainer, store, SCHEDULE, seed=3, **options) == "fitted"
    assert fit_world_model(trainer, store) == "fitted"
    (train, val, schedule), kwargs = calls[0]
    assert schedule is SCHEDULE and kwargs == options
    expected = split_episodes(store, SCHEDULE.val_fraction, 3)
    assert [s.data["episode"].tolist() for s in (train, val)] == [
        s.data["episode"].tolist() for s in expected
    ]
    assert calls[1][0][2] == FitSchedule()


def test_split_episodes_uses_one_episode_for_both_and_splits_two() -> None:
    one = _store(episodes=1)
    train, val = split_episodes(one, 0.5, 0)
    assert train is one and val is one
    two = _store(episodes=2)
    train, val = split_episodes(two, 0.5, 0)
    assert (train.num_episodes, val.num_episodes) == (1, 1)
    assert set(train.data["episode"]).isdisjoint(val.data["episode"])


def test_a_library_fit_is_silent_unless_asked_for_a_progress_bar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`fit_world_model` from Python draws no progress bar by default (the CLI turns it on)."""
    trainer = _trainer()
    seen: list[bool] = []
    monkeypatch.setattr(trainer, "fit", lambda *args, **kwargs: seen.append(kwargs["progress"]))
    fit_world_model(trainer, _store(), SCHEDULE)
    fit_world_model(trainer, _store(), SCHEDULE, progress=True)
    assert seen == [False, True]
