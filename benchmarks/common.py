"""What every benchmark records beside its numbers: machine, versions, seeds and wall time."""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import gymnasium
import mujoco
import numpy as np
import torch


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
