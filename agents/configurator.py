"""The configurator: the one place that reads a whole `Config` and builds the modules from it."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents.config import (
    Config,
    ModelConfig,
    PlannerConfig,
    TrainConfig,
    from_dict,
    to_dict,
    with_overrides,
)
from agents.mpc import MPCAgent
from agents.planners import CEMPlanner, GradientPlanner, HybridPlanner, MPPIPlanner, Planner
from envs import Task, make_task
from worldmodel.atomic import atomic_write_text
from worldmodel.checkpoint import load_checkpoint, load_module_state, save_checkpoint
from worldmodel.errors import CheckpointError, ConfigError
from worldmodel.forward import ForwardModel
from worldmodel.perception import Perception
from worldmodel.train import ModelTrainer

CONFIG_FILE = "config.json"
DATA_FILE = "data.npz"
CHECKPOINT_FILE = "checkpoint.safetensors"

# Per-task presets, applied over the defaults and under the command line's overrides.
PRESETS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": {},
    "InvertedPendulum-v5": {},
    "Reacher-v5": {},
    "HalfCheetah-v5": {},
    "Hopper-v5": {},
}
# Presets of `wm run` on top of those: the env-step budget each task is judged at.
RUN_PRESETS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": {"steps": 2_000},
    "InvertedPendulum-v5": {"steps": 1_000},
    "Reacher-v5": {"steps": 15_000},
    "HalfCheetah-v5": {"steps": 50_000},
    "Hopper-v5": {"steps": 50_000},
}


def make_config(overrides: dict[str, Any], command: str = "train") -> Config:
    """Defaults, then the task's presets (and the command's), then `overrides`."""
    env = overrides.get("env", Config.env)
    make_task(env)  # an unknown task fails here, before anything is written
    preset = PRESETS.get(env, {}) | (RUN_PRESETS.get(env, {}) if command == "run" else {})
    return with_overrides(with_overrides(Config(), {"env": env} | preset), overrides)


def set_threads(threads: int) -> None:
    """Torch's CPU threads: `threads`, or (0) the cores this process may run on.

    torch defaults to every core of the machine, which oversubscribes a process confined to a
    few (taskset, containers) and makes small-tensor work many times slower.
    """
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else must be a usable torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for but CUDA is not available; use --device cpu")
    return device


def build_model(config: ModelConfig, state_dim: int, action_dim: int) -> ForwardModel:
    """The forward model named by `config.kind`."""
    return ForwardModel(
        state_dim=state_dim,
        action_dim=action_dim,
        latent_dim=config.latent_dim if config.kind == "cvae" else 0,
        hidden=config.hidden,
        layers=config.layers,
        dropout=config.dropout,
        latent_dropout=config.latent_dropout,
        latent_dropout_mode=config.latent_dropout_mode,
        beta=config.beta,
    )


def build_planner(config: PlannerConfig, action_dim: int, device: torch.device) -> Planner:
    """The planner named by `config.kind`, over the normalised action box [-1, 1]."""
    box = dict(
        horizon=config.horizon,
        action_low=-1.0,
        action_high=1.0,
        action_dim=action_dim,
        device=device,
    )
    gradient = GradientPlanner(
        **box, iterations=config.iterations, candidates=config.candidates, lr=config.lr
    )
    cem = CEMPlanner(
        **box, iterations=config.iterations, population=config.population, elites=config.elites
    )
    if config.kind == "gradient":
        return gradient
    if config.kind == "cem":
        return cem
    if config.kind == "mppi":
        return MPPIPlanner(
            **box,
            iterations=config.iterations,
            samples=config.population,
            temperature=config.temperature,
        )
    return HybridPlanner(cem, gradient, top_k=config.candidates)


def build_agent(config: Config, task: Task, model: ForwardModel, device: torch.device) -> MPCAgent:
    """Perception -> world model -> task cost -> planner, assembled for `task`."""
    planner_config = config.planner
    return MPCAgent(
        model,
        Perception(task.obs_dim, device),
        task.planning_cost,
        build_planner(planner_config, task.act_dim, device),
        latent_samples=planner_config.latent_samples if model.stochastic else 1,
        terminated=task.terminated,
        uncertainty_weight=planner_config.uncertainty_weight,
        seed=config.seed,
    )


def build_trainer(config: TrainConfig, model: ForwardModel, seed: int) -> ModelTrainer:
    return ModelTrainer(
        model, lr=config.lr, weight_decay=config.weight_decay, grad_clip=config.grad_clip, seed=seed
    )


def new_run_dir(config: Config) -> Path:
    """A fresh `runs/<env>__<name>__<seed>__<time>` folder; never reuses an existing one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(config.runs_dir) / f"{config.env}__{config.name}__{config.seed}__{stamp}"
    for suffix in range(1000):
        path = base.with_name(base.name + (f"-{suffix}" if suffix else ""))
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise ConfigError(f"could not create a new run folder beside {base}; pass another --name")


def save_config(run_dir: Path, config: Config) -> None:
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(to_dict(config), indent=2))


def load_config(run_dir: Path) -> Config:
    """The config a run was made with; a missing or broken file is a one-line error."""
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise ConfigError(f"run folder {run_dir} does not exist; pass one under runs/")
    try:
        return from_dict(Config, json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} is missing; is {run_dir} a run folder?") from exc
    except (json.JSONDecodeError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not a valid config ({exc}); restore it or start anew"
        ) from exc


def save_world_model(path: Path, config: Config, task: Task, model: ForwardModel, **meta) -> None:
    """Weights (with normalisation buffers) + config + task dimensions, atomically."""
    save_checkpoint(
        path,
        {"model": model.state_dict()},
        {
            "config": to_dict(config),
            "task": task.id,
            "obs_dim": task.obs_dim,
            "act_dim": task.act_dim,
            **meta,
        },
    )


@dataclass(frozen=True)
class LoadedModel:
    """A world model restored from a run folder, with what it was made for."""

    config: Config
    task: Task
    model: ForwardModel
    meta: dict


def load_world_model(run_dir: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the model of `run_dir` from its checkpoint; mismatches are one-line errors."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} does not exist; pass one under runs/")
    groups, meta = load_checkpoint(run_dir / CHECKPOINT_FILE, device=device)
    try:
        config = from_dict(Config, meta["config"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"checkpoint in {run_dir} has no valid config ({exc})") from exc
    task = make_task(config.env)
    if (meta.get("task"), meta.get("obs_dim"), meta.get("act_dim")) != (
        task.id,
        task.obs_dim,
        task.act_dim,
    ):
        raise CheckpointError(
            f"checkpoint in {run_dir} is for {meta.get('task')} with obs/action dims "
            f"{meta.get('obs_dim')}/{meta.get('act_dim')}, but {task.id} has "
            f"{task.obs_dim}/{task.act_dim}"
        )
    model = build_model(config.model, task.obs_dim, task.act_dim).to(device)
    load_module_state(model, groups.get("model", {}), "world model")
    model.eval()
    return LoadedModel(config=config, task=task, model=model, meta=meta)
