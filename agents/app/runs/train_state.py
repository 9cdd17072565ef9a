"""What `wm train --resume` continues from: the fit's progress, the trainer's optimiser, RNG
states and counters, and the checks that a checkpoint fits the run folder it is resumed in.

A `wm train` checkpoint holds this state in meta['train'] (and tensor groups beside the model)
while the fit runs; once the run is finished meta['train'] only says it is complete.
"""

from __future__ import annotations

from pathlib import Path

import torch

from agents.app.runs.folder import BROKEN_STATE, CHECKPOINT_FILE, meta_count, resumable_state
from agents.configurator.config import Config
from envs import Task
from worldmodel.errors import CheckpointError
from worldmodel.forward.fit import FitState, ModelTrainer
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


def snapshot_fit(
    trainer: ModelTrainer, fit: FitState
) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """Tensor groups and meta['train'] of everything `restore_fit` needs besides the weights."""
    optim_tensors, optim_meta = optimizer_state(trainer.optimizer)
    groups = {
        "best_model": fit.best_weights,
        "optim_model": optim_tensors,
        "rng": {"trainer": trainer.generator.get_state()} | global_rng_state(),
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


def restore_fit(
    trainer: ModelTrainer, groups: dict[str, dict[str, torch.Tensor]], state: dict, run_dir: Path
) -> FitState:
    """Inverse of `snapshot_fit` (and the weights); mismatches are one-line `CheckpointError`s."""
    where = run_dir / CHECKPOINT_FILE
    model = trainer.model
    to = lambda tensors: {k: v.to(model.device) for k, v in tensors.items()}  # noqa: E731
    best = to(groups.get("best_model", {}))
    # Loaded first only to be checked like the weights (keys, shapes, finite): the fit ends on
    # this copy. The current weights then replace it.
    load_module_state(model, best, "best world model")
    load_module_state(model, to(groups.get("model", {})), "world model")
    try:
        load_optimizer_state(
            trainer.optimizer, to(groups["optim_model"]), state["optimizer"], "model optimiser"
        )
        rng = groups["rng"]
        trainer.generator.set_state(rng["trainer"])
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
        )
    except CheckpointError:
        raise  # already one line saying what is wrong (a ValueError, so not re-worded below)
    except BROKEN_STATE as exc:
        raise CheckpointError(
            f"checkpoint {where} has optimiser, RNG or fit state that does not fit this run "
            f"({exc}); restore the run's own checkpoint"
        ) from exc
