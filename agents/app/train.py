"""`wm train` and `wm eval-model`: collect random rollouts, fit the world model, measure it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from agents.app.media.inspection import (
    inspect_model,
    log_config,
    log_hparams,
    reward_error_metrics,
)
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
from agents.app.runs.train_state import check_train_resumable, complete_state
from agents.app.train_fits import Restored, TrainFits
from agents.configurator.assemble import resolve_device, set_threads
from agents.configurator.config import Config
from agents.configurator.presets import check_for_task
from envs import Task, make_task
from worldmodel.cost.evaluate import RewardError, k_step_reward_errors
from worldmodel.cost.intrinsic import IntrinsicCost
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
from worldmodel.forward.fit import FitResult, split_episodes
from worldmodel.forward.model import ForwardModel

K_STEPS = (1, 5, 10, 25)


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
    """Collect (unless `store` is given), fit the model and then any learned cost (from
    `restored` if given), evaluate, save."""
    if store is None:
        store = _collect(config, task)
        store.save(run_dir / DATA_FILE)
    train_set, val_set = split_episodes(store, config.train.val_fraction, config.seed)
    fits = TrainFits.build(config, task, train_set, device)
    done = 0 if restored is None else fits.restore(restored, run_dir)
    if resuming:
        max_steps = config.train.max_steps
        print(f"resuming {run_dir} at {done} of {max_steps} gradient steps", flush=True)
    logger = Logger(run_dir)
    if restored is None:
        log_config(logger, config)
    model = fits.trainer.model

    def save(extra: dict | None = None, train: dict | None = None, **meta: Any) -> None:
        meta |= {} if train is None else {"train": train}
        save_world_model(
            run_dir / CHECKPOINT_FILE, config, task, model, fits.modules() | (extra or {}),
            model_steps=fits.trainer.total_steps, **meta,
        )  # fmt: skip

    try:
        try:
            result = fits.fit(store, logger.scalars, save)
        except TrainingDivergedError:
            # fit restored the best weights: keep them, so the run folder stays usable.
            save(diverged=True)
            raise
        steps = fits.trainer.total_steps
        report = _log_fitted(logger, config, task, model, fits.costs, val_set, result, steps)
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
    costs: IntrinsicCost,
    val_set: EpisodeStore,
    result: FitResult,
    step: int,
) -> ModelReport:
    """The fitted model's k-step errors and sample scores (and the k-step reward errors of the
    run's cost), imagination and hparams in TensorBoard."""
    report = model_report(model, task, val_set, config.seed, costs)
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
    report = model_report(loaded.model, task, val_set, config.seed, loaded.costs)
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
    rewards: list[RewardError] = field(default_factory=list)  #: k-step reward errors of a cost


def model_report(
    model: ForwardModel,
    task: Task,
    val_set: EpisodeStore,
    seed: int,
    costs: IntrinsicCost | None = None,
) -> ModelReport:
    """The k-step errors, prior-sample scores on the task's random dims (all dims for a
    deterministic task), where the task knows its outcomes the one-step mode shares, and where
    the cost is learned its k-step reward errors."""
    modes = None
    if task.outcomes is not None and len(val_set.window_starts(1)):
        modes = one_step_mode_shares(model, val_set, task.outcomes, task.random_dims, seed=seed)
    rewards = []
    if costs is not None and costs.learned is not None:
        rewards = k_step_reward_errors(model, costs.cost, val_set, K_STEPS, seed=seed)
    return ModelReport(
        errors=k_step_errors(model, val_set, K_STEPS, seed=seed),
        scores=sample_scores(model, val_set, K_STEPS, dims=task.random_dims, seed=seed),
        modes=modes,
        rewards=rewards,
    )


def _log_report(logger: Logger, report: ModelReport, step: int) -> None:
    for e in report.errors:
        logger.scalars(
            {
                f"val/k_step_mse_{e.k}": e.model,
                f"val/k_step_mse_{e.k}_mean": e.mean,
                f"val/k_step_mse_{e.k}_baseline": e.baseline,
            },
            step,
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
    if report.rewards:
        logger.scalars(reward_error_metrics(report.rewards), step)


def format_report(report: ModelReport) -> str:
    """A small table: k-step normalised MSE of one prior rollout and of the mean of several,
    against the constant baseline, and the energy score and 80 % interval coverage of prior
    samples; the mode shares below it."""
    scores = {s.k: s for s in report.scores}
    lines = [
        f"{'k':>4} {'model':>10} {'mean':>10} {'baseline':>10} {'ratio':>7} {'energy':>8} "
        f"{'cover80':>8}"
    ]
    for e in report.errors:
        score = scores.get(e.k)
        extra = f" {score.energy:>8.4f} {score.coverage:>8.2f}" if score else ""
        lines.append(
            f"{e.k:>4} {e.model:>10.4f} {e.mean:>10.4f} {e.baseline:>10.4f} "
            f"{e.model / e.baseline:>7.3f}{extra}"
        )
    if report.modes is not None:
        lines.append(
            f"one-step samples at a real outcome {report.modes[0]:.0%}, "
            f"at the outcomes' mean {report.modes[1]:.0%}"
        )
    if report.rewards:
        header = f"{'k':>4} {'reward mse':>10} {'on real':>10} {'variance':>10}"
        lines.append(f"{header}  (learned cost; reward units)")
        lines += [
            f"{r.k:>4} {r.model:>10.4f} {r.real_states:>10.4f} {r.baseline:>10.4f}"
            for r in report.rewards
        ]
    return "\n".join(lines)
