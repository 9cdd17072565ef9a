"""Numerical guards of the model trainer: non-finite updates are skipped, counted and logged;
too many in a row stop the fit with `TrainingDivergedError` and the best weights restored."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

import worldmodel.forward.fit as fit_module
from worldmodel.data.store import EpisodeStore
from worldmodel.errors import TrainingDivergedError, WorldModelError
from worldmodel.forward.fit import FitSchedule, FitState, ModelTrainer
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
    # the ones the fit started from. The limit is the trainer's default, 50 (docs/errors.md).
    trainer = _trainer(lambda call: call > 10)
    before = copy.deepcopy(trainer.model.state_dict())
    logged: list[dict[str, float]] = []
    steps: list[int] = []
    with pytest.raises(TrainingDivergedError) as info:
        _fit(trainer, log=lambda metrics, step: (logged.append(metrics), steps.append(step)))
    message = str(info.value)
    assert isinstance(info.value, WorldModelError) and "\n" not in message
    assert "50 updates in a row" in message and "--train.lr" in message
    assert trainer.skipped_updates == 50 and trainer.total_steps == 10
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert logged[-1] == {"charts/skipped_updates": 50.0} and steps[-1] == 10


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


def _scripted(trainer: ModelTrainer, losses: list[float]) -> None:
    """Replace the trainer's validation by a script: the fit's start, then one loss per eval."""
    script = iter(losses)

    def validate(windows) -> dict[str, float]:
        loss = next(script)
        return {"loss": loss, "reconstruction": loss}

    trainer.validate = validate  # type: ignore[method-assign]


def _schedule(max_steps: int, eval_every: int = 1, patience: int = 100) -> FitSchedule:
    return FitSchedule(
        horizon=3, batch_size=16, max_steps=max_steps, eval_every=eval_every, patience=patience
    )


def _split() -> tuple[EpisodeStore, EpisodeStore]:
    return _store().split(0.25, 0)


@pytest.mark.parametrize(
    "field", ["horizon", "batch_size", "max_steps", "eval_every", "patience", "val_windows"]
)
def test_a_schedule_size_of_zero_is_refused_and_one_is_accepted(field: str) -> None:
    ones = dict(horizon=1, batch_size=1, max_steps=1, eval_every=1, patience=1, val_windows=1)
    assert getattr(FitSchedule(**ones), field) == 1
    with pytest.raises(
        ValueError, match=r"^horizon, batch_size, max_steps, eval_every, patience must be > 0$"
    ):
        FitSchedule(**ones | {field: 0})


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.1])
def test_a_validation_fraction_outside_the_open_unit_interval_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"^val_fraction must be in \(0, 1\), got "):
        FitSchedule(val_fraction=fraction)
    assert FitSchedule(val_fraction=0.5).val_fraction == 0.5


def _model() -> ForwardModel:
    torch.manual_seed(0)
    return ForwardModel(2, 1, latent_dim=0, hidden=16, layers=1, dropout=0.0)


@pytest.mark.parametrize(
    "kwargs", [{"lr": 0.0}, {"lr": -1e-3}, {"grad_clip": 0.0}, {"weight_decay": -1e-9}]
)
def test_a_non_positive_lr_or_grad_clip_or_negative_weight_decay_is_refused(kwargs: dict) -> None:
    with pytest.raises(
        ValueError, match="^lr and grad_clip must be positive and weight_decay non-negative$"
    ):
        ModelTrainer(_model(), **kwargs)


def test_zero_weight_decay_and_a_grad_clip_below_one_are_accepted() -> None:
    trainer = ModelTrainer(_model(), weight_decay=0.0, grad_clip=0.5)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.0 and trainer.grad_clip == 0.5


def test_a_trainer_with_default_arguments_is_the_configurator_default_trainer() -> None:
    from agents.configurator.assemble import build_trainer
    from agents.configurator.config import Config

    config = Config()
    default = ModelTrainer(_model())
    configured = build_trainer(config.train, _model(), config.seed)
    (group,) = default.optimizer.param_groups
    (expected,) = configured.optimizer.param_groups
    assert (group["lr"], group["weight_decay"]) == (expected["lr"], expected["weight_decay"])
    assert default.grad_clip == configured.grad_clip == config.train.grad_clip
    assert torch.equal(default.generator.get_state(), configured.generator.get_state())
    assert default.rng.bit_generator.state == configured.rng.bit_generator.state


def test_weight_decay_is_decoupled_and_shrinks_each_weight_by_lr_times_decay() -> None:
    """AdamW: p <- p - lr * wd * p - lr * adam_step, so two trainers that differ only in weight
    decay differ after one step by exactly -lr * wd * p."""
    store = _store()
    window = store.sample(16, 3, np.random.default_rng(1))
    lr, decay = 1e-2, 0.1
    plain, decayed = _model(), _model()
    start = copy.deepcopy(plain.state_dict())
    ModelTrainer(plain, lr=lr, weight_decay=0.0).update(window)
    ModelTrainer(decayed, lr=lr, weight_decay=decay).update(window)
    for (name, p0), p1 in zip(plain.named_parameters(), decayed.parameters(), strict=True):
        torch.testing.assert_close(p1 - p0, -lr * decay * start[name], rtol=1e-4, atol=1e-8)


def test_a_limit_of_one_skip_stops_at_the_first_skipped_update() -> None:
    trainer = _trainer(lambda call: call > 2, max_consecutive_skips=1)
    with pytest.raises(TrainingDivergedError, match="1 updates in a row"):
        _fit(trainer)
    assert trainer.total_steps == 2 and trainer.skipped_updates == 1


def test_a_fresh_trainer_counts_its_first_skipped_update_as_one_in_a_row() -> None:
    trainer = _trainer(lambda call: True)
    assert trainer.update(_store().sample(16, 3, trainer.rng)) == {"skipped_updates": 1.0}
    assert trainer.consecutive_skips == 1 and trainer.total_steps == 0


def test_a_fit_does_not_count_skips_in_a_row_from_before_it() -> None:
    # Call 1 (before the fit) and call 2 (the fit's first step) are skipped: two in a row for
    # the trainer, but one for the fit, below the limit of 2.
    trainer = _trainer(lambda call: call <= 2, max_consecutive_skips=2)
    trainer.update(_store().sample(16, 3, trainer.rng))
    assert trainer.consecutive_skips == 1
    result = _fit(trainer, max_steps=5)
    assert result.steps == 5 and trainer.total_steps == 4 and trainer.skipped_updates == 2


def test_update_reports_the_loss_terms_and_the_gradient_norm_of_its_own_generator() -> None:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=2, hidden=16, layers=1, dropout=0.0)
    model.set_normalization(_store().stats())
    trainer = ModelTrainer(model, seed=3)
    window = _store().sample(16, 3, np.random.default_rng(2))
    generator = torch.Generator().set_state(trainer.generator.get_state())
    model.train()
    terms = model.loss(window, generator=generator)
    grads = torch.autograd.grad(terms.loss, list(model.parameters()))
    norm = torch.sqrt(sum(g.square().sum() for g in grads))
    torch.manual_seed(123)  # the global RNG must not matter
    metrics = trainer.update(window)
    assert set(metrics) == {"loss", "reconstruction", "kl", "energy", "grad_norm"}
    assert metrics["loss"] == pytest.approx(terms.loss.item(), rel=1e-6)
    assert metrics["reconstruction"] == pytest.approx(terms.reconstruction.item(), rel=1e-6)
    assert metrics["kl"] == pytest.approx(terms.kl.item(), rel=1e-6) and metrics["kl"] > 0
    assert metrics["energy"] == pytest.approx(terms.energy.item(), rel=1e-6)
    assert metrics["energy"] > 0
    assert metrics["grad_norm"] == pytest.approx(norm.item(), rel=1e-5)


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
