"""What every benchmark records beside its numbers: machine, versions, seeds and wall time."""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import gymnasium
import mujoco
import numpy as np
import torch

from agents.configurator import build_trainer, fit_schedule, new_world_model
from agents.configurator.config import Config, ModelConfig, TrainConfig
from agents.configurator.fields import flat_fields, with_overrides
from envs import Task, make_task
from worldmodel.data.rollout import collect, random_policy
from worldmodel.data.store import EpisodeStore
from worldmodel.errors import ConfigError
from worldmodel.forward.fit import FitResult, fit_world_model, split_episodes
from worldmodel.forward.model import ForwardModel

T = TypeVar("T")
C = TypeVar("C")


def environment_info(seeds: list[int], wall_seconds: float) -> dict[str, Any]:
    """Machine, library versions, threads, accelerator, seeds and wall time of a benchmark run."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "seeds": seeds,
        "wall_seconds": round(wall_seconds, 1),
    }


def write_csv(path: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """Rows as CSV at `path`, and `info` as JSON beside it (`<name>.meta.json`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    path.with_suffix(".meta.json").write_text(json.dumps(info, indent=2) + "\n")


def measured_rows(
    out: Path, seeds: list[int], items: Iterable[T], measure: Callable[[T], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """`measure(item)`'s rows for every item, with `out` (and its meta) rewritten after each: a
    long benchmark cut short keeps what it measured."""
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for item in items:
        rows += measure(item)
        write_csv(out, rows, environment_info(seeds, time.perf_counter() - start))
    return rows


def task_axes(count: int, columns: int = 4) -> tuple[Any, list[Any]]:
    """A matplotlib figure (Agg) with one 5 x 3.5-inch panel per task, `columns` to a row, and
    its first `count` axes (the rest of the last row hidden)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(count, columns)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def field_overrides(defaults: C, pairs: list[str], flag: str) -> C:
    """`defaults` (a config group, e.g. a `ModelConfig`) with 'field=value' strings applied
    (`with_overrides`: typed by the field), e.g. 'beta=2.0'; an unknown field or a bad value ends
    the benchmark with one line naming `flag`."""
    fields = flat_fields(type(defaults))
    try:
        overrides = {k: fields.get(k, str)(v) for k, _, v in (p.partition("=") for p in pairs)}
        return with_overrides(defaults, overrides)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"{flag} {' '.join(pairs)}: {exc}") from None


def random_steps(task_id: str, steps: int, seed: int) -> tuple[Task, EpisodeStore]:
    """The task and `steps` random-action steps of it, seeded by `seed`."""
    task = make_task(task_id)
    env = task.make_env(seed=seed)
    store = EpisodeStore(task.obs_dim, task.act_dim)
    collect(env, random_policy(env, seed), steps, store, seed)
    env.close()
    return task, store


def fit_model(
    model_config: ModelConfig,
    train_config: TrainConfig,
    task: Task,
    store: EpisodeStore,
    device: torch.device,
    seed: int,
) -> tuple[ForwardModel, FitResult, EpisodeStore]:
    """A new model fitted to `store` as `wm train` fits it: normalised by the training episodes,
    validated on the others. Returns the model (in eval mode), the fit and the held-out store."""
    train_set, val_set = split_episodes(store, train_config.val_fraction, seed)
    model = new_world_model(model_config, task, train_set.stats(), device, seed)
    trainer = build_trainer(train_config, model, seed)
    result = fit_world_model(trainer, store, fit_schedule(train_config), seed=seed)
    return model.eval(), result, val_set


def fit_on_random_steps(config: Config, device: torch.device) -> tuple[ForwardModel, EpisodeStore]:
    """`wm train` in-process: `config.steps` random steps of `config.env`, a model fitted to them
    (seeded by `config.seed`, in eval mode), and the steps."""
    task, store = random_steps(config.env, config.steps, config.seed)
    model, result, _ = fit_model(config.model, config.train, task, store, device, config.seed)
    print(
        f"model: {result.steps} steps on {config.steps} random steps, "
        f"val loss {result.best_val_loss:.4f}, {result.seconds:.0f}s"
    )
    return model, store
