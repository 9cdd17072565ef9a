"""`wm train` and `wm eval-model`: collect random rollouts, fit the world model, measure it."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from agents.config import Config
from agents.configurator import (
    build_model,
    build_trainer,
    check_for_task,
    resolve_device,
    set_threads,
)
from agents.inspection import inspect_model, log_config, log_hparams
from agents.run_folder import (
    CHECKPOINT_FILE,
    DATA_FILE,
    load_world_model,
    new_run_dir,
    save_config,
    save_world_model,
)
from envs import make_task
from worldmodel.data import EpisodeStore
from worldmodel.errors import TrainingDivergedError
from worldmodel.evaluate import KStepError, k_step_errors
from worldmodel.logger import Logger
from worldmodel.rollout import collect, random_policy

K_STEPS = (1, 5, 10, 25)


def train(config: Config) -> Path:
    """Collect `config.steps` random steps, fit the model, evaluate it; returns the run folder."""
    task = make_task(config.env)
    check_for_task(config, task, "train")
    device = resolve_device(config.device)
    set_threads(config.threads)
    run_dir = new_run_dir(config)
    save_config(run_dir, config)
    logger = Logger(run_dir)
    log_config(logger, config)
    try:
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
        store.save(run_dir / DATA_FILE)
        train_set, val_set = store.split(config.train.val_fraction, config.seed)

        model = build_model(config.model, task.obs_dim, task.act_dim)
        model.set_normalization(train_set.stats())
        model.to(device)
        trainer = build_trainer(config.train, model, config.seed)
        try:
            result = trainer.fit(
                train_set,
                val_set,
                horizon=config.train.horizon,
                batch_size=config.train.batch_size,
                max_steps=config.train.max_steps,
                eval_every=config.train.eval_every,
                patience=config.train.patience,
                log=logger.scalars,
                progress=config.progress,
            )
        except TrainingDivergedError:
            # fit restored the best weights: keep them, so the run folder stays usable.
            save_world_model(
                run_dir / CHECKPOINT_FILE,
                config,
                task,
                model,
                model_steps=trainer.total_steps,
                diverged=True,
            )
            raise
        errors = k_step_errors(model, val_set, K_STEPS, seed=config.seed)
        _log_errors(logger, errors, trainer.total_steps)
        logger.scalars({"charts/train_seconds": result.seconds}, trainer.total_steps)
        save_world_model(
            run_dir / CHECKPOINT_FILE, config, task, model, model_steps=trainer.total_steps
        )
        inspect_model(
            logger, task, model, val_set, trainer.total_steps, video=config.video, seed=config.seed
        )
        final = {f"k_step_mse_{e.k}": e.model for e in errors}
        log_hparams(
            logger, config, final | {"best_val_loss": result.best_val_loss}, trainer.total_steps
        )
        print(f"trained {result.steps} steps in {result.seconds:.0f}s; run folder: {run_dir}")
        print(format_errors(errors))
    finally:
        logger.close()
    return run_dir


def eval_model(run_dir: Path, device: str = "auto") -> list[KStepError]:
    """k-step error of a trained model on the run's held-out episodes, printed and logged."""
    loaded = load_world_model(run_dir, resolve_device(device))
    config = loaded.config
    task = loaded.task
    store = EpisodeStore.load(Path(run_dir) / DATA_FILE, obs_dim=task.obs_dim, act_dim=task.act_dim)
    _, val_set = store.split(config.train.val_fraction, config.seed)
    errors = k_step_errors(loaded.model, val_set, K_STEPS, seed=config.seed)
    logger = Logger(Path(run_dir) / "eval")
    _log_errors(logger, errors, int(loaded.meta.get("model_steps", 0)))
    logger.close()
    print(format_errors(errors))
    return errors


def _log_errors(logger: Logger, errors: list[KStepError], step: int) -> None:
    for e in errors:
        logger.scalars(
            {f"val/k_step_mse_{e.k}": e.model, f"val/k_step_mse_{e.k}_baseline": e.baseline}, step
        )


def format_errors(errors: list[KStepError]) -> str:
    """A small table of k-step normalised MSE, model vs the constant baseline."""
    lines = [f"{'k':>4} {'model':>10} {'baseline':>10} {'ratio':>7}"]
    for e in errors:
        lines.append(f"{e.k:>4} {e.model:>10.4f} {e.baseline:>10.4f} {e.model / e.baseline:>7.3f}")
    return "\n".join(lines)
