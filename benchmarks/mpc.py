"""MPC in the model-based loop: evaluation return against real env steps, per task, planner, seed.

"env steps" counts every real step taken before a measurement, random seed steps included;
evaluation episodes are separate (own seeds, not training data). Thresholds: Pendulum-v1 mean
eval return >= -200 within 2,000 steps; InvertedPendulum-v5 all 3 eval episodes at 1000 within
1,000 steps; Reacher-v5 mean eval return at 15,000 steps (target >= -6).

    python -m benchmarks.mpc                                   # all tasks, planners, 3 seeds
    python -m benchmarks.mpc --tasks Pendulum-v1 --seeds 0 --planners gradient   # one run
    python -m benchmarks.mpc --from-runs runs/Reacher-v5__cem-seed0__0__*   # rows of kept runs

Writes benchmarks/results/mpc.csv: one row per evaluation of each run. `--from-runs` reads the
rows from run folders kept with `--runs-dir` instead, including runs stopped before their budget
(their last row says how far they got; their wall time is unknown).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.app.loop import run
from agents.app.runs.folder import load_config
from agents.configurator import make_config, set_threads
from agents.configurator.config import Config
from agents.configurator.fields import flat_fields
from benchmarks.common import measured_rows

TASKS = ("Pendulum-v1", "InvertedPendulum-v5", "Reacher-v5")
PLANNERS = ("gradient", "cem", "mppi", "hybrid")
THRESHOLDS = {"Pendulum-v1": -200.0, "InvertedPendulum-v5": 1000.0, "Reacher-v5": -6.0}


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in events.Scalars(tag)]


def one_run(task: str, planner: str, seed: int, runs_dir: Path, overrides: dict) -> list[dict]:
    config = make_config(
        {
            "env": task,
            "seed": seed,
            "planner.kind": planner,
            "runs_dir": str(runs_dir),
            "progress": False,
            "video": False,
            "name": f"{planner}-seed{seed}",
            **overrides,
        },
        command="run",
    )
    start = time.perf_counter()
    run_dir = run(config)
    return run_rows(run_dir, config, time.perf_counter() - start)


def run_rows(run_dir: Path, config: Config, seconds: float | None) -> list[dict]:
    """One row per evaluation logged in `run_dir` (also of a run stopped before its budget)."""
    task, planner = config.env, config.planner.kind
    ms = [v for _, v in scalars(run_dir, "charts/planner_ms_per_action")]
    rows = []
    for step, value in scalars(run_dir, "charts/eval_return"):
        rows.append(
            {
                "task": task,
                "planner": planner,
                "agent": config.agent,
                "seed": config.seed,
                "env_steps": step,
                "eval_return": round(value, 2),
                "threshold": THRESHOLDS.get(task),
                "reached": value >= THRESHOLDS.get(task, float("inf")),
                "ms_per_action": round(sum(ms) / len(ms), 1) if ms else None,
                "run_seconds": None if seconds is None else round(seconds, 1),
            }
        )
    final = rows[-1] if rows else {}
    print(
        f"{task:<20} {planner:<9} seed {config.seed}: eval {final.get('eval_return')} at "
        f"{final.get('env_steps')} steps, {final.get('ms_per_action')} ms/action"
        + ("" if seconds is None else f", {seconds:.0f}s")
    )
    return rows


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """'group.field=value' strings -> typed overrides (types from the config's fields)."""
    fields = flat_fields(Config)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        kind = fields.get(key, str)
        out[key] = text.lower() in ("1", "true", "yes") if kind is bool else kind(text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--planners", nargs="+", default=list(PLANNERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="budget (default: the task's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. planner.horizon=20 loop.eval_episodes=1",
    )
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="keep the runs here (default: a temporary folder)")  # fmt: skip
    parser.add_argument("--from-runs", nargs="+", type=Path, default=None, metavar="RUN_DIR",
                        help="report these run folders instead of running")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mpc.csv"))
    args = parser.parse_args()
    if args.from_runs:
        seeds = sorted({load_config(d).seed for d in args.from_runs})
        measured_rows(args.out, seeds, args.from_runs, lambda d: run_rows(d, load_config(d), None))
        print(f"wrote {args.out}")
        return
    set_threads(args.threads)
    overrides = {"threads": args.threads} | ({"steps": args.steps} if args.steps else {})
    overrides |= parse_overrides(args.set)
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = args.runs_dir or Path(scratch)
        measured_rows(
            args.out,
            args.seeds,
            itertools.product(args.tasks, args.planners, args.seeds),
            lambda run: one_run(*run, runs_dir, overrides),
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
