"""Run folders: `runs/<env>__<name>__<seed>__<time>/` with config.json, data.npz and
checkpoint.safetensors; made fresh (never reused), read back with one-line errors on mismatch."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents.configurator.assemble import (
    PolicyParts,
    build_learned_cost,
    build_model,
    intrinsic_cost,
    learns_cost,
)
from agents.configurator.config import Config
from agents.configurator.fields import from_dict, to_dict
from agents.configurator.validate import INT_MAX, config_from_json, with_legacy_values
from envs import Task, make_task
from worldmodel.cost.intrinsic import IntrinsicCost
from worldmodel.data.store import Stats
from worldmodel.errors import CheckpointError, ConfigError
from worldmodel.forward.model import ForwardModel
from worldmodel.io.atomic import atomic_write_text
from worldmodel.io.checkpoint import load_checkpoint, load_module_state, save_checkpoint

CONFIG_FILE = "config.json"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
DATA_FILE = "data.npz"
CHECKPOINT_FILE = "checkpoint.safetensors"
BROKEN_STATE = (
    KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError, OverflowError,
)  # fmt: skip
"""What loading a damaged optimiser or RNG state raises: a string where a dict was, a key gone,
a numpy RNG state out of range (OverflowError), a torch one of the wrong size (RuntimeError)."""


def new_run_dir(config: Config) -> Path:
    """A fresh `runs/<env>__<name>__<seed>__<time>` folder; never reuses an existing one. Characters
    of the env id other than letters, digits, '.', '_' and '-' become '-'."""
    if not _NAME.fullmatch(config.name):
        raise ConfigError(
            f"name {config.name!r} may only hold letters, digits, '.', '_' and '-' (and may not "
            "start with '.'); pass another --name"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = (
        Path(config.runs_dir) / f"{folder_env(config.env)}__{config.name}__{config.seed}__{stamp}"
    )
    for suffix in range(1000):
        path = base.with_name(base.name + (f"-{suffix}" if suffix else ""))
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as exc:  # runs_dir is a file, read-only, ...
            raise ConfigError(
                f"cannot create a run folder in {config.runs_dir} ({exc.strerror}); pass a "
                "writable folder as --runs-dir"
            ) from exc
        return path
    raise ConfigError(f"could not create a new run folder beside {base}; pass another --name")


def folder_env(env: str) -> str:
    """The env id as run folders spell it: 'dm_control/cartpole-swingup-v0' and
    'my_pkg.envs:MyEnv-v0' are ids, not folder names, so other characters than letters, digits,
    '.', '_' and '-' become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", env)


def save_config(run_dir: Path, config: Config) -> None:
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(to_dict(config), indent=2))


def load_config(run_dir: Path) -> Config:
    """The config a run was made with; a missing, unreadable or broken file (not UTF-8, not
    JSON, a value of the wrong type or out of range) is a one-line error naming it."""
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise ConfigError(f"run folder {run_dir} does not exist; pass one under runs/")
    try:
        return config_from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} is missing; is {run_dir} a run folder?") from exc
    except OSError as exc:  # a folder of that name, no permission to read, ...
        raise ConfigError(
            f"cannot read {path} ({exc.strerror}); restore the run's config.json"
        ) from exc
    except (ValueError, TypeError, RecursionError) as exc:  # JSON, UTF-8, ConfigError
        raise ConfigError(
            f"{path} is not a valid config ({exc}); restore it or start anew"
        ) from exc


def save_world_model(
    path: Path,
    config: Config,
    task: Task,
    model: ForwardModel,
    extra: dict[str, torch.nn.Module | dict[str, torch.Tensor]] | None = None,
    **meta: Any,
) -> None:
    """Weights (with normalisation buffers) + config + task dimensions, atomically.

    `extra` modules (policy, critic) and tensor groups (optimiser, RNG states) are saved beside
    the model under their names.
    """
    groups = {"model": model.state_dict()}
    groups |= {
        name: group.state_dict() if isinstance(group, torch.nn.Module) else group
        for name, group in (extra or {}).items()
    }
    save_checkpoint(
        path,
        groups,
        {
            "config": to_dict(config),
            "task": task.id,
            "obs_dim": task.obs_dim,
            "act_dim": task.act_dim,
            **meta,
        },
    )


def policy_modules(parts: PolicyParts | None) -> dict[str, torch.nn.Module]:
    """The modules of `parts` that a checkpoint holds (none without a policy)."""
    if parts is None:
        return {}
    return {
        "policy": parts.policy,
        "critic": parts.critic,
        "critic_target": parts.critic_learner.target,
    }


def cost_modules(costs: IntrinsicCost) -> dict[str, torch.nn.Module]:
    """The learned cost a checkpoint holds beside the model, as 'cost' (none where exact)."""
    return {} if costs.learned is None else {"cost": costs.learned}


def load_policy_modules(parts: PolicyParts, groups: dict[str, dict[str, torch.Tensor]]) -> None:
    """Inverse of `policy_modules`; a checkpoint without them is a one-line error."""
    for name, module in policy_modules(parts).items():
        if name not in groups:
            raise CheckpointError(f"checkpoint has no {name}; was the run made with --agent mpc?")
        load_module_state(module, groups[name], name)


def model_stats(model: ForwardModel) -> Stats:
    """The data statistics a trained model carries in its buffers."""
    return Stats(model.state_mean, model.state_std, model.delta_mean, model.delta_std)


@dataclass(frozen=True)
class LoadedModel:
    """A world model restored from a run folder, with what it was made for."""

    config: Config
    task: Task
    model: ForwardModel
    meta: dict
    groups: dict[str, dict[str, torch.Tensor]]  #: every tensor group of the checkpoint
    costs: IntrinsicCost  #: the run's cost: the task's exact one or the learned one restored


def check_same_run(run_dir: Path, config: Config, task: Task, meta: dict) -> None:
    """A one-line error unless the checkpoint `meta` of `run_dir` was made for its config.json
    (task, dimensions, every config value) by a run that did not diverge: what `--resume` needs."""
    where = run_dir / CHECKPOINT_FILE
    if not _made_for(meta, task):
        raise CheckpointError(
            f"checkpoint {where} is for {meta.get('task')} with obs/action dims "
            f"{meta.get('obs_dim')}/{meta.get('act_dim')}, but the run's {CONFIG_FILE} is for "
            f"{task.id} ({task.obs_dim}/{task.act_dim}); restore the run's own checkpoint"
        )
    saved = meta.get("config")
    if isinstance(saved, dict):
        saved = _with_defaults(saved)
        ours = to_dict(config)
        for section, values in ours.items():
            theirs = saved.get(section)
            if isinstance(values, dict) and isinstance(theirs, dict):
                differ = [f"{section}.{k}" for k in values if values[k] != theirs.get(k)]
            else:
                differ = [section] if values != theirs else []
            if differ:
                raise CheckpointError(
                    f"checkpoint {where} was made with another config ({differ[0]} is "
                    f"{_lookup(saved, differ[0])!r} there, {_lookup(ours, differ[0])!r} in "
                    f"{CONFIG_FILE}); restore the run's own files"
                )
    if meta.get("diverged"):
        raise CheckpointError(
            f"checkpoint {where} was saved when training diverged; start a new run "
            "(lower --train.lr)"
        )


def resumable_state(
    run_dir: Path,
    config: Config,
    task: Task,
    meta: dict,
    key: str,
    version: int,
    what: str,
    hint: str,
) -> dict:
    """meta[key], the `what` state a checkpoint of this run resumes from, or a one-line error.

    `version` is the newest format this code reads (an older one is refused too: its fields
    differ); `hint` says which runs hold such a state.
    """
    where = run_dir / CHECKPOINT_FILE
    check_same_run(run_dir, config, task, meta)
    state = meta.get(key)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {where} holds no {what} state to resume from; {hint}")
    found = meta_count(state, "version", where, f"{what} state") if "version" in state else 0
    if found > version:
        raise CheckpointError(
            f"checkpoint {where} has {what} state format {found}, newer than {version}; "
            "upgrade worldmodel"
        )
    if found < version:
        raise CheckpointError(
            f"checkpoint {where} has {what} state format {found}, older than {version}; finish "
            "the run with the worldmodel that made it, or start anew"
        )
    return state


def meta_count(values: object, key: str, where: Path, what: str) -> int:
    """values[key], a counter of a checkpoint's meta, as a count 0..2**63-1: a damaged or
    hand-edited counter (a string, null, -1, 2**70) is a one-line error here, not a TypeError or
    an overflow in a library once the run has started writing."""
    value = values.get(key) if isinstance(values, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT_MAX:
        raise CheckpointError(
            f"checkpoint {where} has a broken {what} counter {key!r} ({value!r}); restore it "
            "from a copy"
        )
    return value


def _with_defaults(saved: dict) -> dict:
    """A checkpoint's config with the options added since it was written at what the run did
    (their defaults, or `LEGACY_VALUES`); as saved if it no longer makes a Config."""
    try:
        return to_dict(from_dict(Config, with_legacy_values(saved)))
    except (ConfigError, TypeError, ValueError):
        return saved


def _made_for(meta: dict, task: Task) -> bool:
    """Whether checkpoint `meta` names `task` and its observation and action dimensions."""
    return (meta.get("task"), meta.get("obs_dim"), meta.get("act_dim")) == (
        task.id,
        task.obs_dim,
        task.act_dim,
    )


def _lookup(values: dict, dotted: str) -> object:
    for key in dotted.split("."):
        values = values.get(key) if isinstance(values, dict) else None
    return values


def _folder_env(run_dir: Path) -> str | None:
    """The env named by the run folder's config.json, or None if it cannot be read."""
    try:
        env = json.loads((run_dir / CONFIG_FILE).read_text()).get("env")
    except (OSError, ValueError, AttributeError):
        return None
    return env if isinstance(env, str) else None


def load_world_model(run_dir: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the model of `run_dir` from its checkpoint; mismatches are one-line errors."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} does not exist; pass one under runs/")
    groups, meta = load_checkpoint(run_dir / CHECKPOINT_FILE, device=device)
    try:
        config = config_from_json(meta["config"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint in {run_dir} has no valid config ({exc}); restore it from a copy or "
            "train again"
        ) from exc
    task = make_task(config.env)
    if not _made_for(meta, task):
        raise CheckpointError(
            f"checkpoint in {run_dir} is for {meta.get('task')} with obs/action dims "
            f"{meta.get('obs_dim')}/{meta.get('act_dim')}, but {task.id} has "
            f"{task.obs_dim}/{task.act_dim}; restore the run's own checkpoint or train again"
        )
    folder_env = _folder_env(run_dir)
    if folder_env is not None and folder_env != config.env:
        raise CheckpointError(
            f"checkpoint in {run_dir} is for {config.env} but the folder's {CONFIG_FILE} is for "
            f"{folder_env}; restore the run's own checkpoint or train again"
        )
    model = build_model(config.model, task.obs_dim, task.act_dim).to(device)
    load_module_state(model, groups.get("model", {}), "world model")
    model.eval()
    learned = None
    if learns_cost(config):
        if "cost" not in groups:
            raise CheckpointError(
                f"checkpoint in {run_dir} has no learned cost, but its config says "
                "--cost learned; restore the run's own checkpoint or train again"
            )
        learned = build_learned_cost(config.cost_model, task).to(device)
        load_module_state(learned, groups["cost"], "learned cost")
        learned.eval()
    costs = intrinsic_cost(config, task, learned)
    return LoadedModel(config, task, model, meta, groups, costs)
