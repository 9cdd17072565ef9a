"""The fit loop: validation and patience, the best weights kept, logged charts, progress bar."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from fit_cases import _fit, _store, _trainer

import worldmodel.forward.fit as fit_module
from worldmodel.data.store import EpisodeStore
from worldmodel.errors import TrainingDivergedError
from worldmodel.forward.fit import FitSchedule, FitState, ModelTrainer


def test_each_validation_logs_the_training_charts() -> None:
    logged: list[tuple[dict, int]] = []
    result = _fit(_trainer(lambda call: False), max_steps=20, eval_every=10,
                  log=lambda metrics, step: logged.append((metrics, step)))  # fmt: skip
    assert [step for _, step in logged] == [10, 20] and result.steps == 20
    for metrics, _ in logged:
        assert {"train/loss", "val/loss", "charts/learning_rate", "charts/samples_per_s"} <= set(
            metrics
        )
        assert metrics["charts/learning_rate"] == 1e-2  # by default the rate is constant
        assert metrics["charts/samples_per_s"] > 0


def _rates(trainer: ModelTrainer) -> list[float]:
    """Records the learning rate of each of the trainer's updates."""
    rates: list[float] = []
    update = trainer.update

    def recording(window):
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        return update(window)

    trainer.update = recording  # type: ignore[method-assign]
    return rates


@pytest.mark.parametrize("final", [0.0, 0.02, 0.5])
def test_a_fit_s_rate_falls_along_a_half_cosine_to_lr_final_and_is_the_base_rate_after(
    final: float,
) -> None:
    trainer = _trainer(lambda call: False)
    rates = _rates(trainer)
    train, val = _split()
    schedule = FitSchedule(horizon=3, batch_size=8, max_steps=8, eval_every=4, lr_final=final)
    trainer.fit(train, val, schedule)
    expected = [
        1e-2 * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * k / 8))) for k in range(8)
    ]
    assert rates == pytest.approx(expected)
    assert schedule.lr_factor(8) == pytest.approx(final)
    assert schedule.lr_factor(80) == pytest.approx(final)
    assert trainer.lr == 1e-2 and trainer.base_lr == 1e-2
    trainer.fit(train, val, schedule)  # a second fit starts from the base rate again
    assert rates[8:] == pytest.approx(expected)


def test_lr_final_one_keeps_the_rate_constant_and_outside_the_unit_interval_is_refused() -> None:
    trainer = _trainer(lambda call: False)
    rates = _rates(trainer)
    train, val = _split()
    trainer.fit(train, val, FitSchedule(horizon=3, batch_size=8, max_steps=6, lr_final=1.0))
    assert rates == [1e-2] * 6
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="lr_final"):
            FitSchedule(lr_final=bad)


def test_a_diverged_fit_leaves_the_base_rate_for_the_next_updates() -> None:
    trainer = _trainer(lambda call: call > 3, max_consecutive_skips=5)
    with pytest.raises(TrainingDivergedError):
        _fit(trainer)
    assert trainer.lr == 1e-2


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


def _scripted(trainer: ModelTrainer, losses: list[float]) -> None:
    """Replace the trainer's validation by a script: the fit's start, then one loss per eval."""
    script = iter(losses)

    def validate(windows) -> dict[str, float]:
        loss = next(script)
        return {"loss": loss, "reconstruction": loss}

    trainer.validate = validate  # type: ignore[method-assign]


def _schedule(
    max_steps: int, eval_every: int = 1, patience: int = 100, ema_decay: float = 0.0
) -> FitSchedule:
    return FitSchedule(
        horizon=3, batch_size=16, max_steps=max_steps, eval_every=eval_every, patience=patience,
        ema_decay=ema_decay,
    )  # fmt: skip


def _split() -> tuple[EpisodeStore, EpisodeStore]:
    return _store().split(0.25, 0)


def test_each_validation_logs_every_training_term_under_train() -> None:
    logged: list[dict[str, float]] = []
    _fit(_trainer(lambda call: False), max_steps=10, eval_every=10,
         log=lambda metrics, step: logged.append(metrics))  # fmt: skip
    train = {k for k in logged[0] if k.startswith("train/")}
    assert train == {
        "train/loss", "train/reconstruction", "train/kl", "train/energy", "train/grad_norm"
    }  # fmt: skip
    assert logged[0]["train/kl"] == 0.0  # deterministic model
    assert logged[0]["train/reconstruction"] == logged[0]["train/loss"]
    assert {"val/loss", "val/reconstruction", "val/energy", "charts/skipped_updates"} <= set(
        logged[0]
    )


def test_an_improvement_must_beat_the_best_by_a_relative_one_in_a_million() -> None:
    best = 1e4
    at_threshold = best - 1e-6 * abs(best)
    trainer = _trainer(lambda call: False)
    _scripted(trainer, [best, best - 1e-3, at_threshold, 9000.0, 9500.0])
    states: list[tuple[float, int]] = []
    train, val = _split()
    result = trainer.fit(
        train, val, _schedule(4),
        on_checkpoint=lambda state: states.append((state.best_val_loss, state.bad_evals)),
    )  # fmt: skip
    assert states == [(best, 1), (best, 2), (9000.0, 0), (9000.0, 1)]
    assert result.best_val_loss == 9000.0 and not result.stopped_early


def test_a_validation_equal_to_a_best_of_zero_is_no_improvement() -> None:
    trainer = _trainer(lambda call: False)
    _scripted(trainer, [0.0] * 10)
    train, val = _split()
    result = trainer.fit(train, val, _schedule(10, patience=3))
    assert result.steps == 3 and result.stopped_early and result.best_val_loss == 0.0


def test_the_weights_kept_are_a_copy_taken_at_the_best_validation() -> None:
    trainer = _trainer(lambda call: False)
    _scripted(trainer, [1.0, 0.5, 0.9, 0.8])
    snapshots: list[dict[str, torch.Tensor]] = []
    train, val = _split()
    result = trainer.fit(
        train, val, _schedule(6, eval_every=2),
        on_checkpoint=lambda state: snapshots.append(copy.deepcopy(trainer.model.state_dict())),
    )  # fmt: skip
    assert result.best_val_loss == 0.5 and result.steps == 6
    final = trainer.model.state_dict()
    for key, value in final.items():
        assert torch.equal(value, snapshots[0][key]), key
    assert not torch.equal(snapshots[0]["decoder.0.weight"], snapshots[2]["decoder.0.weight"])


def test_a_fit_whose_validation_is_never_finite_reports_nan() -> None:
    trainer = _trainer(lambda call: False)
    _scripted(trainer, [float("inf")] * 4)
    train, val = _split()
    result = trainer.fit(train, val, _schedule(3))
    assert math.isnan(result.best_val_loss) and result.steps == 3


def test_without_a_held_out_window_the_fit_validates_on_the_training_episodes() -> None:
    trainer = _trainer(lambda call: False)
    train, _ = _split()
    short = _store(episodes=2, length=2, seed=1)  # no window of 3 steps
    assert len(short.window_starts(3)) == 0
    schedule = _schedule(4, eval_every=2)
    result = trainer.fit(train, short, schedule)
    own = trainer.validate(train.spaced_windows(3, schedule.val_windows))["loss"]
    assert math.isfinite(result.best_val_loss)
    assert result.best_val_loss == pytest.approx(own, rel=1e-6)


class _FakeClock:
    """perf_counter for the fit module: time moves only when a training step is taken."""

    def __init__(self, trainer: ModelTrainer, per_step: float) -> None:
        self.now = 1000.0
        update = trainer.update

        def timed_update(window):
            self.now += per_step
            return update(window)

        trainer.update = timed_update  # type: ignore[method-assign]

    def perf_counter(self) -> float:
        return self.now


def test_samples_per_second_are_window_steps_since_the_last_validation_over_its_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trainer = _trainer(lambda call: False)
    monkeypatch.setattr(fit_module, "time", _FakeClock(trainer, per_step=0.25))
    logged: list[dict[str, float]] = []
    result = _fit(trainer, max_steps=8, eval_every=2,
                  log=lambda metrics, step: logged.append(metrics))  # fmt: skip
    # 2 steps of 16 windows x 3 steps each per 0.5 s
    assert [m["charts/samples_per_s"] for m in logged] == [2 * 16 * 3 / 0.5] * 4
    assert result.seconds == 8 * 0.25


class _FakeBar:
    instances: list[_FakeBar] = []

    def __init__(self, total=None, initial=0, disable=False, desc=None, leave=True) -> None:
        self.total, self.n, self.disable, self.desc, self.leave = (
            total,
            initial,
            disable,
            desc,
            leave,
        )
        self.initial, self.postfix, self.closed = initial, None, False
        _FakeBar.instances.append(self)

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **postfix: str) -> None:
        self.postfix = postfix

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("progress", [True, False])
def test_the_progress_bar_counts_the_steps_of_max_steps_from_where_a_resume_starts(
    monkeypatch: pytest.MonkeyPatch, progress: bool
) -> None:
    monkeypatch.setattr(fit_module, "tqdm", _FakeBar)
    _FakeBar.instances = []
    trainer = _trainer(lambda call: False)
    _scripted(trainer, [0.9])  # a resume does not validate at its start
    weights = copy.deepcopy(trainer.model.state_dict())
    train, val = _split()
    resume = FitState(steps=4, best_val_loss=0.75, bad_evals=0, best_weights=weights, seconds=0.0)
    trainer.fit(train, val, _schedule(6, eval_every=2), progress=progress, resume=resume)
    (bar,) = _FakeBar.instances
    assert (bar.total, bar.initial, bar.n) == (6, 4, 6)
    assert bar.disable is (not progress) and bar.closed
    assert bar.desc == "train model" and bar.leave is False
    assert bar.postfix == {"val": "0.9000", "best": "0.7500"}


def _params(trainer: ModelTrainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def test_with_ema_decay_a_fit_validates_keeps_and_ends_on_the_average_of_its_weights() -> None:
    """The average starts at the first update's weights and moves 1 - d of the way after each
    later one (d warmed up as (1 + t) / (10 + t)); validation sees it, the best validation keeps
    it, and training goes on from its own weights."""
    decay, trainer = 0.8, _trainer(lambda call: False)
    _scripted(trainer, [1.0, 0.5, 0.9, 0.4, 0.6])
    iterates, validated, after = [], [], []
    update, validate = trainer.update, trainer.validate

    def recording_update(window):
        if iterates and len(iterates) % 2 == 0:
            after.append(_params(trainer))  # the weights the next update starts from
        out = update(window)
        iterates.append(_params(trainer))
        return out

    def recording_validate(windows):
        validated.append(_params(trainer))
        return validate(windows)

    trainer.update, trainer.validate = recording_update, recording_validate  # type: ignore
    train, val = _split()
    trainer.fit(train, val, _schedule(8, eval_every=2, ema_decay=decay))
    averages, average = [], None
    for i, weights in enumerate(iterates):
        d = min(decay, (1 + i) / (10 + i))  # warmed up: 0.2 at the 2nd update, 0.8 from the 31st
        average = weights if average is None else {
            n: average[n] * d + (1 - d) * w for n, w in weights.items()
        }  # fmt: skip
        if i % 2 == 1:
            averages.append(average)
    assert len(validated) == 5  # the start (its own weights) and 4 validations
    for n in iterates[0]:
        for seen, want in zip(validated[1:], averages, strict=True):
            torch.testing.assert_close(seen[n], want[n])
        for own, start in zip(iterates[1::2], after, strict=False):  # 3 of the 4
            assert torch.equal(own[n], start[n])  # training resumed from its own weights
        torch.testing.assert_close(trainer.model.state_dict()[n], averages[2][n])  # best: 0.4
    assert not torch.equal(averages[2]["decoder.0.weight"], iterates[5]["decoder.0.weight"])


def test_ema_decay_zero_keeps_the_raw_weights_and_one_is_refused() -> None:
    trainer = _trainer(lambda call: False)
    _scripted(trainer, [1.0, 0.5, 0.9])
    kept: list[dict[str, torch.Tensor]] = []
    update = trainer.update

    def recording(window):
        out = update(window)
        kept.append(_params(trainer))
        return out

    trainer.update = recording  # type: ignore[method-assign]
    train, val = _split()
    trainer.fit(train, val, _schedule(4, eval_every=2, ema_decay=0.0))
    for n, value in kept[1].items():
        assert torch.equal(trainer.model.state_dict()[n], value)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="ema_decay"):
            FitSchedule(ema_decay=bad)
