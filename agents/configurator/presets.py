"""Per-task presets and `make_config`: defaults, then the task's presets, then the user's options.

Why each preset is what it is, with the measurements behind it: docs/results.md ("Presets").
"""

from __future__ import annotations

import math
from typing import Any

from agents.configurator.config import Config
from agents.configurator.fields import to_dict, with_overrides
from agents.configurator.validate import check_config, option
from envs import Task, make_task
from worldmodel.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # The 30-step plan spans the swing-up: the critic's coarse value would only rank plans.
    "Pendulum-v1": {"planner.terminal_value": False},
    # Episodes of random actions last ~5 steps, and a 10-step plan needs a terminal cost-to-go
    # to keep the cart centred (tests/agents/test_mpc_terminal_value.py): the critic's.
    "InvertedPendulum-v5": {
        "agent": "mpc+policy",
        "train.horizon": 4,
        "planner.horizon": 10,
        "planner.iterations": 20,
        "planner.candidates": 8,
    },
    # 50-step episodes: fewer gradient steps per refit for the same updates per env step.
    "Reacher-v5": {"model.hidden": 128, "loop.train_steps": 100, "loop.eval_every": 20},
    "HalfCheetah-v5": {},
    "Hopper-v5": {},
    "Walker2d-v5": {},
    # A plan is judged on its sampled futures: eight futures show the gust that blows the cart
    # over the edge; 15 steps reach the goal from any start. Six iterations: what its loop was
    # measured with.
    "GustyLedge-v0": {"planner.horizon": 15, "planner.latent_samples": 8, "planner.iterations": 6},
    "PushedInvertedPendulum-v0": {
        "agent": "mpc+policy",
        "train.horizon": 4,
        "planner.horizon": 10,
        "planner.iterations": 20,
        "planner.candidates": 8,
        "planner.latent_samples": 8,
    },
}
"""Applied over the defaults and under the command line's options."""
LOCOMOTION: dict[str, Any] = {
    "agent": "policy",
    "loop.update_every": 10,
    "loop.model_updates": 2,
    "loop.policy_updates": 1,
    "loop.renormalize": True,
}
"""`wm run` on HalfCheetah, Hopper and Walker2d: the policy with updates interleaved with the
steps (0.2 model and 0.1 policy updates a step), so that 100k steps take about twice SAC's
wall time on one core, where MPC with a refit per episode would take many times that; the
normalisation follows the data, as random steps barely move the body and running speeds lie
many of their stds out."""
RUN_PRESETS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": {"steps": 2_000},
    "InvertedPendulum-v5": {"steps": 1_000},
    "Reacher-v5": {"steps": 15_000},
    "HalfCheetah-v5": {"steps": 50_000} | LOCOMOTION,
    "Hopper-v5": {"steps": 50_000} | LOCOMOTION,
    "Walker2d-v5": {"steps": 50_000} | LOCOMOTION,
    "GustyLedge-v0": {"steps": 2_000},
    "PushedInvertedPendulum-v0": {"steps": 2_000},
}
"""Presets of `wm run` on top of those: the env-step budget each task is judged at, and how
locomotion runs (`LOCOMOTION`)."""
OTHER_RUN_PRESET: dict[str, Any] = {"loop.renormalize": True}
"""`wm run` on a task without presets of its own (any gymnasium id, DMC): the seed steps of an
unknown task rarely span the states the agent reaches (a swung-up pole), so the normalisation
follows the data."""


def make_config(overrides: dict[str, Any], command: str = "train") -> Config:
    """Defaults (the cost: exact where the task has one, else learned), then the task's presets
    (and the command's), then `overrides`."""
    env = overrides.get("env", Config.env)
    task = make_task(env)  # an unknown task fails here, before anything is written
    run_preset = RUN_PRESETS.get(env, OTHER_RUN_PRESET) if command == "run" else {}
    preset = PRESETS.get(env, {}) | run_preset
    defaults = {"env": env, "name": command, "cost": "learned" if task.cost is None else "exact"}
    config = with_overrides(with_overrides(Config(), defaults | preset), overrides)
    _check_finite(to_dict(config))
    check_for_task(config, task, command)
    return config


def _check_finite(values: dict[str, Any], prefix: str = "") -> None:
    """Every float option finite: inf passes `> 0` checks but is no usable size or rate."""
    for key, value in values.items():
        if isinstance(value, dict):
            _check_finite(value, f"{prefix}{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"{prefix}{key} must be a finite number, got {value}; "
                f"pass a finite --{option(prefix + key)}"
            )


def check_for_task(config: Config, task: Task, command: str = "train") -> None:
    """Sizes valid alone but not for `task`, and every check of `validate.check_config`:
    one-line errors before any run folder is made.

    `command` 'train' collects `config.steps` random steps before fitting; 'run' only
    `config.loop.seed_steps`.
    """
    if config.cost == "exact" and task.cost is None:
        raise ConfigError(
            f"{task.id} has no exact cost; pass --cost learned (the default for it), or give "
            "it one with envs.register_task"
        )
    horizon = config.train.horizon
    if horizon > task.max_episode_steps:
        raise ConfigError(
            f"train.horizon {horizon} is longer than an episode of {task.id} "
            f"({task.max_episode_steps} steps); lower --train.horizon"
        )
    name, first = (
        ("steps", config.steps)
        if command == "train"
        else ("loop.seed_steps", config.loop.seed_steps)
    )
    if first < horizon:
        raise ConfigError(
            f"{name} {first} is fewer than train.horizon {horizon}, so no training window fits; "
            f"raise --{option(name)} or lower --train.horizon"
        )
    check_config(config, task, command)
