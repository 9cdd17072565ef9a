"""What `wm train --resume` continues from: the fit's progress, the trainer's optimiser, RNG
states and counters, and the checks that a checkpoint fits the run folder it is resumed in.

A `wm train` checkpoint holds this state in meta['train'] (and tensor groups beside the model)
while the fit runs; once the run is finished meta['train'] only says it is complete. With a
learned cost the world model is fit first, then the cost: meta['train'] of the second phase
holds the model's result and the cost's fit state (`snapshot_cost_fit`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from agents.app.runs.folder import BROKEN_STATE, CHECKPOINT_FILE, meta_count, resumable_state
from agents.configurator.config import Config
from envs import Task
from worldmodel.errors import CheckpointError
from worldmodel.forward.fit import FitResult, FitState, ModelTrainer
from worldmodel.io.checkpoint import (
    global_rng_state,
    load_global_rng_state,
    load_module_state,
    load_optimizer_state,
    optimizer_state,
)

TRAIN_STATE_VERSION = 1  #: version of the fit state a `wm train` checkpoint holds in meta['train']


def check_train_resumable(run_dir: Path, config: Config, task: Task, meta: dict) -> dict:
    """The training state of a checkpoint (meta['train']), or a one-line error."""
    return resumable_state(
        run_dir,
        config,
        task,
        meta,
        "train",
        TRAIN_STATE_VERSION,
        "training",
        "only runs of `wm train` can be resumed by it, runs of `wm run` by `wm run --resume`",
    )


def complete_state() -> dict:
    """meta['train'] of a finished run: nothing is left to resume."""
    return {"version": TRAIN_STATE_VERSION, "complete": True}


# The fits of a `wm train`, by name: the key of their torch generator in the 'rng' group and the
# words for their weights in errors. The world model's keep the names they had before the cost
# could be learned.
_FITS = {"model": ("trainer", "world model"), "cost": ("cost_trainer", "learned cost")}


def snapshot_fit(
    trainer: ModelTrainer, fit: FitState, name: str = "model"
) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """Tensor groups and meta['train'] of everything `restore_fit` needs besides the weights of
    fit `name` ('model', or 'cost' for the learned cost)."""
    optim_tensors, optim_meta = optimizer_state(trainer.optimizer)
    groups = {
        f"best_{name}": fit.best_weights,
        f"optim_{name}": optim_tensors,
        "rng": {_FITS[name][0]: trainer.generator.get_state()} | global_rng_state(),
        f"average_{name}": fit.average,
    }
    state = {
        "version": TRAIN_STATE_VERSION,
        "complete": False,
        "fit": {
            "steps": fit.steps,
            "best_val_loss": fit.best_val_loss,
            "bad_evals": fit.bad_evals,
            "seconds": fit.seconds,
        },
        "counters": {
            "total_steps": trainer.total_steps,
            "skipped_updates": trainer.skipped_updates,
            "consecutive_skips": trainer.consecutive_skips,
        },
        "optimizer": optim_meta,
        "numpy_rng": trainer.rng.bit_generator.state,
    }
    return groups, state


def snapshot_cost_fit(
    model_trainer: ModelTrainer, model_fit: FitResult, cost_trainer: ModelTrainer, fit: FitState
) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """Groups and meta['train'] while the learned cost is fit, after the world model's fit:
    the model's result and counters (its weights are final) and the cost's fit state."""
    groups, cost_state = snapshot_fit(cost_trainer, fit, "cost")
    state = {
        "version": TRAIN_STATE_VERSION,
        "complete": False,
        "phase": "cost",
        "model_fit": dataclasses.asdict(model_fit),
        "counters": {
            "total_steps": model_trainer.total_steps,
            "skipped_updates": model_trainer.skipped_updates,
        },
        "cost": cost_state,
    }
    return groups, state


def fitting_cost(state: dict) -> bool:
    """Whether meta['train'] `state` was saved while the learned cost was fit (the world
    model's fit done)."""
    return state.get("phase") == "cost"


def restore_fit(
    trainer: ModelTrainer,
    groups: dict[str, dict[str, torch.Tensor]],
    state: dict,
    run_dir: Path,
    name: str = "model",
) -> FitState:
    """Inverse of `snapshot_fit` (and the weights); mismatches are one-line `CheckpointError`s."""
    where = run_dir / CHECKPOINT_FILE
    model = trainer.model
    to = lambda tensors: {k: v.to(model.device) for k, v in tensors.items()}  # noqa: E731
    generator_key, words = _FITS[name]
    best = to(groups.get(f"best_{name}", {}))
    # Loaded first only to be checked like the weights (keys, shapes, finite): the fit ends on
    # this copy. The current weights then replace it.
    load_module_state(model, best, f"best {words}")
    load_module_state(model, to(groups.get(name, {})), words)
    try:
        load_optimizer_state(
            trainer.optimizer, to(groups[f"optim_{name}"]), state["optimizer"], f"{name} optimiser"
        )
        rng = groups["rng"]
        trainer.generator.set_state(rng[generator_key])
        load_global_rng_state(rng)
        trainer.rng.bit_generator.state = state["numpy_rng"]
        counters, fit = state["counters"], state["fit"]
        trainer.total_steps = meta_count(counters, "total_steps", where, "training")
        trainer.skipped_updates = meta_count(counters, "skipped_updates", where, "training")
        trainer.consecutive_skips = meta_count(counters, "consecutive_skips", where, "training")
        return FitState(
            steps=meta_count(fit, "steps", where, "fit"),
            best_val_loss=float(fit["best_val_loss"]),
            bad_evals=meta_count(fit, "bad_evals", where, "fit"),
            best_weights=best,
            seconds=float(fit["seconds"]),
            average=_checked_average(model, to(groups.get(f"average_{name}", {})), where, words),
        )
    except CheckpointError:
        raise  # already one line saying what is wrong (a ValueError, so not re-worded below)
    except BROKEN_STATE as exc:
        raise CheckpointError(
            f"checkpoint {where} has optimiser, RNG or fit state that does not fit this run "
            f"({exc}); restore the run's own checkpoint"
        ) from exc


def restore_fitted_model(
    trainer: ModelTrainer, groups: dict[str, dict[str, torch.Tensor]], state: dict, run_dir: Path
) -> FitResult:
    """The world model's final weights and counters, and its fit's result, from a checkpoint
    saved while the cost was fit (`snapshot_cost_fit`)."""
    model = trainer.model
    load_module_state(model, {k: v.to(model.device) for k, v in groups.get("model", {}).items()},
                      "world model")  # fmt: skip
    try:
        trainer.total_steps = int(state["counters"]["total_steps"])
        trainer.skipped_updates = int(state["counters"]["skipped_updates"])
        return FitResult(**state["model_fit"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {run_dir / CHECKPOINT_FILE} has a world-model fit state that does not "
            f"fit this run ({exc}); restore the run's own checkpoint"
        ) from exc


def _checked_average(
    model: torch.nn.Module, average: dict[str, torch.Tensor], where: Path, words: str
) -> dict[str, torch.Tensor]:
    """A fit's saved weight average (empty: none yet), checked against `model`'s parameters."""
    if not average:
        return {}
    params = dict(model.named_parameters())
    fits = set(average) == set(params) and all(
        average[n].shape == p.shape and bool(torch.isfinite(average[n]).all())
        for n, p in params.items()
    )
    if not fits:
        raise CheckpointError(
            f"checkpoint {where} has a {words} weight average that does not fit this model "
            "(other parameters or shapes, or NaN/inf); restore the run's own checkpoint"
        )
    return average
