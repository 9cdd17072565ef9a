"""Locomotion at the field's budget: HalfCheetah-v5, Hopper-v5 and Walker2d-v5 at 100k env steps,
this project's agent beside stable-baselines3 SAC run on the same machine and evaluated on the
same episodes, with the published returns as anchors.

    python -m benchmarks.locomotion                               # 3 tasks x (ours, sac) x 3 seeds
    python -m benchmarks.locomotion --tasks Hopper-v5 --agents ours --seeds 0 --steps 20000
    python -m benchmarks.locomotion --runs-dir runs/locomotion --resume   # continue a stopped one
    python -m benchmarks.locomotion --set agent=policy loop.update_every=5
    python -m benchmarks.locomotion --steps 20000 --tasks Swimmer-v5 Ant-v5 \
        dm_control/cheetah-run-v0 dm_control/walker-walk-v0   # any task id: cost learned
    python -m benchmarks.locomotion --plot ours.csv sac.csv --out both.csv   # both.png, no runs

Ours is `wm run` with the task's presets, `OURS` and `--set` on top: updates interleaved with
the env steps (`loop.update_every`), so the cost per step stays flat over 100k steps. Rows, one
per evaluation, with the run's wall time (for a resumed run, that of the invocation that
finished it), go to benchmarks/results/locomotion.csv as each run finishes. With `--resume` the
rows already there are kept and their runs skipped, and a run of ours stopped part-way continues
from its checkpoint in `--runs-dir` (`wm run --resume`); a stopped SAC run starts over. The plot
puts the published returns at 100k (benchmarks/results/published_returns.csv, with sources)
beside the curves.
"""

from __future__ import annotations

import argparse
import csv
import re
import time
from pathlib import Path

import numpy as np

from agents.app.loop import resume, run
from agents.app.runs.folder import folder_env
from agents.configurator import make_config, set_threads
from agents.configurator.presets import LOCOMOTION
from benchmarks.common import environment_info, task_axes, write_csv
from benchmarks.mpc import parse_overrides
from benchmarks.sample_efficiency import run_curve, sac

TASKS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5")
BUDGET = 100_000
OURS = dict(LOCOMOTION)
"""Our agent's loop on top of the presets, for every task (the locomotion tasks' own `wm run`
presets): the policy alone, 0.2 model and 0.1 policy updates per env step, what fits twice
SAC's wall time on one core (~42 ms a step on HalfCheetah), the normalisation following the
data. Not tuned for return. A run kept in `--runs-dir` resumes with its own saved config."""
SAC_EVAL_EVERY = 10_000
ANCHORS = Path(__file__).parent / "results" / "published_returns.csv"


def ours(task: str, seed: int, budget: int, overrides: dict, runs_dir: Path) -> list[tuple]:
    """(env steps, eval return, wall seconds) of `wm run`; a run of the same task, seed and
    budget kept in `runs_dir` is resumed instead of started."""
    config = make_config(
        {"env": task, "seed": seed, "steps": budget, "runs_dir": str(runs_dir),
         "name": f"locomotion-{budget}", "progress": False, "video": False} | OURS | overrides,
        command="run",
    )  # fmt: skip
    kept = sorted(runs_dir.glob(f"{folder_env(task)}__{config.name}__{seed}__*"))
    start = time.perf_counter()
    run_dir = resume(kept[-1]) if kept else run(config)
    seconds = time.perf_counter() - start
    curve, _, _ = run_curve(run_dir)
    return [(step, value, round(seconds, 1)) for step, value in curve]


def sac_curve(task: str, seed: int, budget: int, episodes: int) -> list[tuple]:
    """(env steps, eval return, wall seconds) of SB3's SAC on the loop's evaluation episodes."""
    start = time.perf_counter()
    curve = sac(task, seed, budget, episodes, min(SAC_EVAL_EVERY, budget))
    seconds = round(time.perf_counter() - start, 1)
    return [(step, value, seconds) for step, value in curve]


def read_rows(path: Path) -> list[dict]:
    """The rows of an earlier run of this benchmark (for `--resume`)."""
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def plot(rows: list[dict], path: Path) -> None:
    """Mean eval return over seeds against env steps per task and agent; published returns at
    100k as markers."""
    with ANCHORS.open() as f:
        anchors = [a for a in csv.DictReader(f) if int(a["env_steps"]) == 100_000]
    tasks = sorted({r["task"] for r in rows})
    fig, axes = task_axes(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        for agent in sorted({r["agent"] for r in rows if r["task"] == task}):
            mine = [r for r in rows if r["task"] == task and r["agent"] == agent]
            steps = sorted({int(r["env_steps"]) for r in mine})
            mean = [np.mean([float(r["eval_return"]) for r in mine if int(r["env_steps"]) == s])
                    for s in steps]  # fmt: skip
            ax.plot(steps, mean, marker="o", label=agent)
        for anchor in (a for a in anchors if a["task"] == anchor_name(task)):
            ax.scatter([100_000], [float(anchor["mean_return"])], marker="_", s=200)
            ax.annotate(anchor["method"], (100_000, float(anchor["mean_return"])), fontsize=7)
        ax.set(title=task, xlabel="env steps", ylabel="eval return")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def anchor_name(task: str) -> str:
    """The task's name in the published results: 'HalfCheetah-v5' -> 'HalfCheetah',
    'dm_control/cheetah-run-v0' -> 'cheetah-run'."""
    return re.sub(r"-v\d+$", "", task.removeprefix("dm_control/"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--agents", nargs="+", default=["ours", "sac"], choices=["ours", "sac"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=BUDGET, help="env-step budget of each run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides of our agent")  # fmt: skip
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/locomotion"),
                        help="our run folders, kept: a stopped run can be resumed")  # fmt: skip
    parser.add_argument("--resume", action="store_true",
                        help="keep --out's rows, skip their runs, resume stopped ones")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/locomotion.csv"))
    parser.add_argument("--plot", nargs="+", type=Path, metavar="CSV",
                        help="run nothing: plot these CSVs' rows into --out's .png")  # fmt: skip
    return parser


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.plot:
        if missing := [str(p) for p in args.plot if not p.is_file()]:
            parser.error(f"--plot: no such CSV: {', '.join(missing)}")
        plot([r for path in args.plot for r in read_rows(path)], args.out.with_suffix(".png"))
        print(f"wrote {args.out.with_suffix('.png')}")
        return
    set_threads(args.threads)
    overrides = {"threads": args.threads} | parse_overrides(args.set)
    rows = read_rows(args.out) if args.resume else []
    start = time.perf_counter()
    for task in args.tasks:
        for agent in args.agents:
            for seed in args.seeds:
                key = (task, agent, str(seed), str(args.steps))
                if any((r["task"], r["agent"], r["seed"], r["budget"]) == key for r in rows):
                    print(f"{task} {agent} seed {seed}: in {args.out} already, skipped")
                    continue
                if agent == "sac":
                    episodes = make_config({"env": task}, command="run").loop.eval_episodes
                    curve = sac_curve(task, seed, args.steps, episodes)
                else:
                    curve = ours(task, seed, args.steps, overrides, args.runs_dir)
                rows += [{"task": task, "agent": agent, "seed": seed, "budget": args.steps,
                          "env_steps": step, "eval_return": round(value, 2),
                          "run_seconds": seconds} for step, value, seconds in curve]  # fmt: skip
                print(f"{task:<16} {agent:<5} seed {seed}: {curve[-1][1]:.1f} at "
                      f"{curve[-1][0]} steps in {curve[-1][2]:.0f} s")  # fmt: skip
                info = environment_info(args.seeds, time.perf_counter() - start)
                write_csv(args.out, rows, info | {"ours": OURS, "set": args.set})
    if rows:
        plot(rows, args.out.with_suffix(".png"))
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
