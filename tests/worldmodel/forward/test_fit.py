"""Numerical guards of the model trainer: non-finite updates are skipped, counted and logged;
too many in a row stop the fit with `TrainingDivergedError` and the best weights restored. Also
the trainer's and the schedule's settings, and what one update reports."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from fit_cases import _fit, _store, _trainer

from worldmodel.errors import TrainingDivergedError, WorldModelError
from worldmodel.forward.fit import FitSchedule, ModelTrainer
from worldmodel.forward.model import ForwardModel


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
