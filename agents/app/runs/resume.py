"""Where `wm train --resume` and `wm run --resume` start from: the run folder's own config and,
if one was written, its checkpoint. Without one (killed before its first checkpoint) both start
the run over in place, from the same config and seeds, so the result is that of an unbroken run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from agents.app.runs.folder import CHECKPOINT_FILE, CONFIG_FILE, DATA_FILE, load_config
from agents.configurator.assemble import resolve_device
from agents.configurator.config import Config
from agents.configurator.presets import check_for_task
from envs import Task, make_task
from worldmodel.errors import ConfigError
from worldmodel.io.checkpoint import load_checkpoint

Checkpoint = tuple[dict[str, dict[str, torch.Tensor]], dict]  #: tensor groups, meta


@dataclass(frozen=True)
class ResumePoint:
    """A run folder opened to be continued."""

    config: Config  #: its config.json, which a resume reads and never rewrites
    task: Task
    device: torch.device
    checkpoint: Checkpoint | None  #: None: the run was stopped before its first checkpoint


def resume_point(run_dir: Path, command: str) -> ResumePoint:
    """The config and (if there is one) the checkpoint of `run_dir` for `command` ('train' or
    'run'); bad files are one-line errors, and nothing is written. A hand-edited config.json
    gets every check a new run's options get."""
    config = load_config(run_dir)
    task = make_task(config.env)
    try:
        check_for_task(config, task, command)
    except ConfigError as exc:  # the options are the file's: name it
        raise ConfigError(f"{Path(run_dir) / CONFIG_FILE}: {exc}") from exc
    device = resolve_device(config.device)
    path = Path(run_dir) / CHECKPOINT_FILE
    checkpoint = load_checkpoint(path, device="cpu") if path.exists() else None
    return ResumePoint(config=config, task=task, device=device, checkpoint=checkpoint)


def announce_restart(run_dir: Path) -> None:
    print(f"{run_dir} has no checkpoint yet; starting it over in place", flush=True)


def clear_interrupted_writes(run_dir: Path) -> None:
    """Remove the temporary files of atomic writes that a crash interrupted: only leftovers, never
    a file the run reads, so a resume refused after this still leaves the run's files as they
    were."""
    for name in (DATA_FILE, CHECKPOINT_FILE):
        for stale in Path(run_dir).glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
