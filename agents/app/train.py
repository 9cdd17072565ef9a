"""`wm train` and `wm eval-model`: collect random rollouts, fit the world model, measure it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from agents.app.media.inspection import inspect_model, log_config, log_hparams
from agents.app.media.logger import Logger
from agents.app.runs.folder import (
    CHECKPOINT_FILE,
    DATA_FILE,
    load_world_model,
    meta_count,
    new_run_dir,
    save_config,
    save_world_model,
)
from agents.app.runs.lock import run_folder_lock
from agents.app.runs.resume import announce_restart, clear_interrupted_writes, resume_point
from agents.app.runs.train_state import (
    check_train_resumable,
    complete_state,
    restore_fit,
    snapshot_fit,
)
from agents.configurator.assemble import (
    build_trainer,
    fit_schedule,
    new_world_model,
    resolve_device,
    set_threads,
)
from agents.configurator.config import Config
from agents.configurator.presets import check_for_task
from envs import Task, make_task
from worldmodel.data.rollout import collect, random_policy
from worldmodel.data.store import EpisodeStore
from worldmodel.errors import TrainingDivergedError
from worldmodel.forward.evaluate import (
    KStepError,
    SampleScores,
    k_step_errors,
    one_step_mode_shares,
    sample_scores,
)
from worldmodel.forward.fit import FitResult, FitState, fit_world_model, split_episodes
from worldmodel.forward.model import ForwardModel

K_STEPS = (1, 5, 10, 25)
Restored = tuple[dict[str, dict[str, torch.Tensor]], dict]  #: checkpoint groups, meta['train']


def train(config: Config) -> Path:
    """Collect `config.steps` random steps, fit the model, evaluate it; returns the run folder.

    The run checkpoints at every validation (`train.eval_every` gradient steps), so a crash
    loses at most that many steps: `resume` continues it.
    """
    task = make_task(config.env)
    check_for_task(config, task, "train")
    device = resolve_device(config.device)
    set_threads(config.threads)
    run_dir = new_run_dir(config)
    with run_folder_lock(run_dir):
        save_config(run_dir, config)
        return _train(config, task, device, run_dir, None, None, resuming=False)


def resume(run_dir: Path) -> Path:
    """Continue the `wm train` of `run_dir` from its last checkpoint, with its own config.json.

    Without a checkpoint (killed while collecting, or before the first validation) the fit
    starts over in the run folder, on its data.npz if that was written; else the data is
    collected again, which gives the same data (every seed comes from the config). A finished
    run is left as it is.
    """
    run_dir = Path(run_dir)
    with run_folder_lock(run_dir):
        point = resume_point(run_dir, "train")
        config, task = point.config, point.task
        restored = None
        if point.checkpoint is not None:
            groups, meta = point.checkpoint
            state = check_train_resumable(run_dir, config, task, meta)
            if state.get("complete"):
                print(
                    f"{run_dir} is already complete ({meta.get('model_steps')} gradient steps); "
                    "nothing to resume"
                )
                return run_dir
            restored = groups, state
        else:
            announce_restart(run_dir)
        store = (
            EpisodeStore.load(run_dir / DATA_FILE, obs_dim=task.obs_dim, act_dim=task.act_dim)
            if (run_dir / DATA_FILE).exists()
            else None
        )
        set_threads(config.threads)
        clear_interrupted_writes(run_dir)
        return _train(config, task, point.device, run_dir, store, restored, resuming=True)


def _train(
    config: Config,
    task: Task,
    device: torch.device,
    run_dir: Path,
    store: EpisodeStore | None,
    restored: Restored | None,
    resuming: bool,
) -> Path:
    """Collect (unless `store` is given), fit (from `restored` if given), evaluate, save."""
    if store is None:
        store = _collect(config, task)
        store.save(run_dir / DATA_FILE)
    train_set, val_set = split_episodes(store, config.train.val_fraction, config.seed)
    model = new_world_model(config.model, task, train_set.stats(), device, config.seed)
    trainer = build_trainer(config.train, model, config.seed)
    fit_state = None if restored is None else restore_fit(trainer, *restored, run_dir)
    if resuming:
        done = fit_state.steps if fit_state is not None else 0
        max_steps = config.train.max_steps
        print(f"resuming {run_dir} at {done} of {max_steps} gradient steps", flush=True)
    logger = Logger(run_dir)
    if fit_state is None:
        log_config(logger, config)

    def save(**meta: Any) -> None:
        save_world_model(
            run_dir / CHECKPOINT_FILE, config, task, model, model_steps=trainer.total_steps, **meta
        )

    def checkpoint(state: FitState) -> None:
        groups, train_meta = snapshot_fit(trainer, state)
        save(extra=groups, train=train_meta)

    try:
        try:
            result = fit_world_model(
                trainer,
                store,
                fit_schedule(config.train),
                seed=config.seed,
                log=logger.scalars,
                progress=config.progress,
                resume=fit_state,
                on_checkpoint=checkpoint,
            )
        except TrainingDivergedError:
            # fit restored the best weights: keep them, so the run folder stays usable.
            save(diverged=True)
            raise
        report = _log_fitted(logger, config, task, model, val_set, result, trainer.total_steps)
        logger.flush()
        # Last: a crash before it resumes from the last validation and redoes the steps above.
        save(train=complete_state())
        print(f"trained {result.steps} steps in {result.seconds:.0f}s; run folder: {run_dir}")
        print(format_report(report))
    finally:
        logger.close()
    return run_dir


def _log_fitted(
    logger: Logger,
    config: Config,
    task: Task,
    model: ForwardModel,
    val_set: EpisodeStore,
    result: FitResult,
    step: int,
) -> ModelReport:
    """The fitted model's k-step errors and sample scores, imagination and hparams in
    TensorBoard."""
    report = model_report(model, task, val_set, config.seed)
    _log_report(logger, report, step)
    logger.scalars({"charts/train_seconds": result.seconds}, step)
    inspect_model(logger, task, model, val_set, step, video=config.video, seed=config.seed)
    final = {f"k_step_mse_{e.k}": e.model for e in report.errors}
    log_hparams(logger, config, final | {"best_val_loss": result.best_val_loss}, step)
    return report


def _collect(config: Config, task: Task) -> EpisodeStore:
    """`config.steps` random steps; the same config gives the same data."""
    env = task.make_env(seed=config.seed)
    store = EpisodeStore(task.obs_dim, task.act_dim)
    with tqdm(total=config.steps, desc="collect", disable=not config.progress) as bar:
        collect(
            env,
            random_policy(env, config.seed),
            config.steps,
            store,
            config.seed,
            on_step=lambda t: bar.update(t - bar.n),
        )
    env.close()
    return store


def eval_model(run_dir: Path, device: str = "auto") -> ModelReport:
    """k-step error and prior-sample scores of a trained model on the run's held-out episodes,
    printed and logged."""
    loaded = load_world_model(run_dir, resolve_device(device))
    config = loaded.config
    task = loaded.task
    meta, where = loaded.meta, Path(run_dir) / CHECKPOINT_FILE
    step = meta_count(meta, "model_steps", where, "model") if "model_steps" in meta else 0
    store = EpisodeStore.load(Path(run_dir) / DATA_FILE, obs_dim=task.obs_dim, act_dim=task.act_dim)
    _, val_set = split_episodes(store, config.train.val_fraction, config.seed)
    report = model_report(loaded.model, task, val_set, config.seed)
    logger = Logger(Path(run_dir) / "eval")
    _log_report(logger, report, step)
    logger.close()
    print(format_report(report))
    return report


@dataclass(frozen=True)
class ModelReport:
    """How well a model predicts held-out episodes."""

    errors: list[KStepError]  #: k-step MSE against the constant baseline
    scores: list[SampleScores]  #: energy score and coverage of prior samples per k
    modes: tuple[float, float] | None  #: one-step samples at a real outcome / at their mean


def model_report(model: ForwardModel, task: Task, val_set: EpisodeStore, seed: int) -> ModelReport:
    """The k-step errors, prior-sample scores on the task's random dims (all dims for a
    deterministic task) and, where the task knows its outcomes, the one-step mode shares."""
    modes = None
    if task.outcomes is not None and len(val_set.window_starts(1)):
        modes = one_step_mode_shares(model, val_set, task.outcomes, task.random_dims, seed=seed)
    return ModelReport(
        errors=k_step_errors(model, val_set, K_STEPS, seed=seed),
        scores=sample_scores(model, val_set, K_STEPS, dims=task.random_dims, seed=seed),
        modes=modes,
    )


def _log_report(logger: Logger, report: ModelReport, step: int) -> None:
    for e in report.errors:
        logger.scalars(
            {f"val/k_step_mse_{e.k}": e.model, f"val/k_step_mse_{e.k}_baseline": e.baseline}, step
        )
    for score in report.scores:
        logger.scalars(
            {
                f"val/energy_score_{score.k}": score.energy,
                f"val/coverage_{score.k}": score.coverage,
            },
            step,
        )
    if report.modes is not None:
        logger.scalars({"val/at_mode": report.modes[0], "val/at_mean": report.modes[1]}, step)


def format_report(report: ModelReport) -> str:
    """A small table: k-step normalised MSE, model vs the constant baseline, and the energy
    score and 80 % interval coverage of prior samples; the mode shares below it."""
    scores = {s.k: s for s in report.scores}
    lines = [f"{'k':>4} {'model':>10} {'baseline':>10} {'ratio':>7} {'energy':>8} {'cover80':>8}"]
    for e in report.errors:
        score = scores.get(e.k)
        extra = f" {score.energy:>8.4f} {score.coverage:>8.2f}" if score else ""
        lines.append(
            f"{e.k:>4} {e.model:>10.4f} {e.baseline:>10.4f} {e.model / e.baseline:>7.3f}{extra}"
        )
    if report.modes is not None:
        lines.append(
            f"one-step samples at a real outcome {report.modes[0]:.0%}, "
            f"at the outcomes' mean {report.modes[1]:.0%}"
        )
    return "\n".join(lines)
