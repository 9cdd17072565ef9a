"""Learned against exact cost: the same `wm run` with `--cost learned` and `--cost exact`, on the
tasks that have an exact cost, at the same env steps.

    python -m benchmarks.learned_cost                          # 3 tasks x 2 costs x 3 seeds
    python -m benchmarks.learned_cost --tasks Pendulum-v1 --seeds 0 --threads 1
    python -m benchmarks.learned_cost --resume                 # skip the runs already in --out
    python -m benchmarks.learned_cost --agent mpc+policy --set planner.horizon=20

Each run is `wm run` with the task's presets and budget (`--steps` replaces it) and `--set`
overrides, evaluated every `loop.eval_every` iterations on the loop's evaluation seeds (the
same start states for both costs). Rows, one per evaluation, are written to
benchmarks/results/learned_cost.csv as each run finishes, and plotted beside it (.png). The
summary compares, per task, the learned cost's steps to the task's threshold and its return at
the budget with the exact cost's: the acceptance of issue 18 asks for at most 1.25x the steps
and a return within 5 %.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np

from agents.configurator import make_config, set_threads
from benchmarks.common import environment_info, write_csv
from benchmarks.mpc import THRESHOLDS, parse_overrides
from benchmarks.sample_efficiency import ours, plot, steps_to_threshold

TASKS = ("Pendulum-v1", "InvertedPendulum-v5", "Reacher-v5")
COSTS = ("exact", "learned")


def measure(
    task: str, cost: str, agent: str, seed: int, budget: int, overrides: dict, runs_dir: Path
) -> list[dict]:
    """The rows of one `wm run --cost COST`: its evaluations, with the steps to threshold."""
    start = time.perf_counter()
    named = overrides | {"cost": cost, "name": f"{agent.replace('+', '-')}-{cost}-seed{seed}"}
    curve, _, ms = ours(task, agent, seed, budget, named, runs_dir)
    reached = steps_to_threshold(curve, THRESHOLDS[task])
    print(f"{task:<20} {cost:<8} seed {seed}: return at the budget {curve[-1][1]:.1f}, "
          f"steps to threshold {reached}")  # fmt: skip
    seconds = round(time.perf_counter() - start, 1)
    return [{"task": task, "cost": cost, "agent": f"{agent} ({cost} cost)", "seed": seed,
             "env_steps": step, "eval_return": round(value, 2), "threshold": THRESHOLDS[task],
             "steps_to_threshold": reached, "budget": budget, "ms_per_action": ms,
             "run_seconds": seconds}
            for step, value in curve]  # fmt: skip


def summary(rows: list[dict]) -> list[str]:
    """Per task: mean steps to threshold and return at the budget of each cost, over seeds,
    and the learned cost's ratio to the exact one's (unreached thresholds count as the budget)."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        figures = {}
        for cost in COSTS:
            mine = [r for r in rows if r["task"] == task and r["cost"] == cost]
            if not mine:
                continue
            seeds = sorted({r["seed"] for r in mine})
            last = [max((r for r in mine if r["seed"] == s), key=lambda r: r["env_steps"])
                    for s in seeds]  # fmt: skip
            steps = [r["steps_to_threshold"] or r["budget"] for r in last]
            returns = [r["eval_return"] for r in last]
            figures[cost] = (float(np.mean(steps)), float(np.mean(returns)))
            reached = sum(r["steps_to_threshold"] is not None for r in last)
            lines.append(f"{task:<20} {cost:<8} steps to threshold {figures[cost][0]:>8.0f} "
                         f"({reached}/{len(last)} reached)  return at the budget "
                         f"{figures[cost][1]:>8.1f}  seeds {seeds}")  # fmt: skip
        if len(figures) == 2:
            (exact_steps, exact_return), (steps, value) = figures["exact"], figures["learned"]
            gap = (value - exact_return) / max(abs(exact_return), 1e-9)
            lines.append(f"{task:<20} learned/exact steps {steps / exact_steps:.2f} "
                         f"(<= 1.25 asked), return {gap:+.1%} (within 5 % asked)")  # fmt: skip
    return lines


def read_rows(path: Path) -> list[dict]:
    """Rows of an earlier run (numbers parsed), for `--resume`."""
    if not path.exists():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("seed", "env_steps", "budget"):
            r[key] = int(r[key])
        r["eval_return"] = float(r["eval_return"])
        r["steps_to_threshold"] = int(r["steps_to_threshold"]) if r["steps_to_threshold"] else None
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=sorted(THRESHOLDS))
    parser.add_argument("--costs", nargs="+", default=list(COSTS), choices=COSTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--agent", default="mpc", help="mpc, policy or mpc+policy")
    parser.add_argument("--steps", type=int, default=None, help="env-step budget (default: the "
                        "task's `wm run` budget)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides of both runs")  # fmt: skip
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="keep the runs here (default: a temporary folder)")  # fmt: skip
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in --out and skip their runs")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learned_cost.csv"))
    return parser


def main() -> None:
    args = _parser().parse_args()
    set_threads(args.threads)
    overrides = {"threads": args.threads, "progress": False} | parse_overrides(args.set)
    rows = read_rows(args.out) if args.resume else []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = args.runs_dir or Path(scratch)
        for task in args.tasks:
            budget = args.steps or make_config({"env": task}, command="run").steps
            for cost in args.costs:
                for seed in args.seeds:
                    if any((r["task"], r["cost"], r["seed"]) == (task, cost, seed) for r in rows):
                        print(f"{task} {cost} seed {seed}: in {args.out} already, skipped")
                        continue
                    rows += measure(task, cost, args.agent, seed, budget, overrides, runs_dir)
                    info = environment_info(args.seeds, time.perf_counter() - start)
                    write_csv(args.out, rows, info | {"agent": args.agent, "set": args.set})
    if not rows:
        print("nothing measured")
        return
    plot(rows, args.out.with_suffix(".png"))
    print("\n".join(summary(rows)))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
