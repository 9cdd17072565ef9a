"""Sample efficiency: this project's agents vs stable-baselines3 SAC at the same env-step budgets.

Both are evaluated on the same separate evaluation seeds; "env steps" counts every real training
step before the evaluation (random ones included). SAC gets a longer budget (`SAC_STEPS`) than this
project's agents, so that its steps to the threshold are measured rather than cut off. Reports,
per task, agent and seed, the evaluation return at each point, the env steps to the task's
threshold, and for policy agents the imagined-minus-real return of the policy (model exploitation).

    pip install -e ".[bench]"
    python -m benchmarks.sample_efficiency                       # all tasks, mpc and sac, 3 seeds
    python -m benchmarks.sample_efficiency --tasks Pendulum-v1 --agents mpc sac --seeds 0
    python -m benchmarks.sample_efficiency --agents policy --label policy-lu0 \
        --set policy.uncertainty_weight=0                        # the penalty switched off
    python -m benchmarks.sample_efficiency --from-runs runs/InvertedPendulum-v5__policy-seed0__*

Writes benchmarks/results/sample_efficiency.csv and .png (eval return against env steps).
`--from-runs` reads the rows of this project's agents from run folders kept with `--runs-dir`
instead, including runs stopped before their budget (their last row says how far they got).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import tempfile
from pathlib import Path

import numpy as np

from agents.app.evaluate import EVAL_SEED_OFFSET
from agents.app.loop import run
from agents.app.runs.folder import load_config
from agents.configurator import make_config, set_threads
from benchmarks.common import measured_rows, task_axes
from benchmarks.mpc import THRESHOLDS, parse_overrides, scalars
from envs import make_task
from worldmodel.data.rollout import run_episode

TASKS = ("Pendulum-v1", "InvertedPendulum-v5", "Reacher-v5")
SAC_STEPS = {"Pendulum-v1": 20_000, "InvertedPendulum-v5": 20_000, "Reacher-v5": 50_000}
SAC_EVAL_EVERY = {"Pendulum-v1": 1_000, "InvertedPendulum-v5": 1_000, "Reacher-v5": 2_500}
GAP_TAG = "policy/imagined_minus_real_return"


def ours(
    task: str, agent: str, seed: int, budget: int, overrides: dict, runs_dir: Path
) -> tuple[list[tuple[int, float]], dict[int, float], float]:
    """`wm run --agent AGENT`: (env steps, mean eval return) at each evaluation, the policy's
    imagined-minus-real return by env step (empty for agents without a policy), and the mean
    milliseconds per action."""
    config = make_config({"env": task, "seed": seed, "agent": agent, "steps": budget,
                          "runs_dir": str(runs_dir), "progress": False, "video": False,
                          "name": f"{agent.replace('+', '-')}-seed{seed}", **overrides},
                         command="run")  # fmt: skip
    return run_curve(run(config))


def run_curve(run_dir: Path) -> tuple[list[tuple[int, float]], dict[int, float], float]:
    """What `ours` returns, read from the TensorBoard events of a kept run folder."""
    ms = [value for _, value in scalars(run_dir, "charts/planner_ms_per_action")]
    mean_ms = round(sum(ms) / len(ms), 2) if ms else float("nan")
    return scalars(run_dir, "charts/eval_return"), dict(scalars(run_dir, GAP_TAG)), mean_ms


def sac(task_id: str, seed: int, budget: int, episodes: int, every: int) -> list[tuple[int, float]]:
    """(env steps, mean eval return) of SB3's SAC every `every` steps, evaluated on the loop's
    evaluation seeds."""
    from stable_baselines3 import SAC

    task = make_task(task_id)
    model = SAC("MlpPolicy", task.make_env(seed=seed), seed=seed, verbose=0, device="cpu")
    curve = []
    for step in range(min(every, budget), budget + 1, min(every, budget)):
        model.learn(total_timesteps=int(step) - model.num_timesteps, reset_num_timesteps=False)
        env = task.make_env(seed=seed + EVAL_SEED_OFFSET)
        act = lambda obs: model.predict(obs, deterministic=True)[0]  # noqa: E731
        returns = [
            run_episode(env, act, seed=seed + EVAL_SEED_OFFSET + i).episode_return
            for i in range(episodes)
        ]
        curve.append((int(model.num_timesteps), float(np.mean(returns))))
    return curve


def steps_to_threshold(curve: list[tuple[int, float]], threshold: float) -> int | None:
    return next((step for step, value in curve if value >= threshold), None)


def curve_rows(
    task: str,
    label: str,
    seed: int,
    curve: list[tuple[int, float]],
    gaps: dict[int, float],
    ms: float,
) -> list[dict]:
    """CSV rows of one run's evaluations; prints its summary line."""
    reached = steps_to_threshold(curve, THRESHOLDS[task])
    print(f"{task:<20} {label:<10} seed {seed}: final {curve[-1][1]:.1f}, "
          f"steps to threshold {reached}")  # fmt: skip
    return [{"task": task, "agent": label, "seed": seed, "env_steps": step,
             "eval_return": round(value, 2), "threshold": THRESHOLDS[task],
             "steps_to_threshold": reached,
             "imagined_minus_real": round(gaps[step], 2) if step in gaps else None,
             "ms_per_action": ms}
            for step, value in curve]  # fmt: skip


def read_curves(paths: list[Path]) -> list[dict]:
    """Rows of sample-efficiency CSVs, and of `benchmarks.mpc` CSVs as agent 'AGENT (PLANNER)'."""
    rows = []
    for path in paths:
        with path.open() as f:
            for row in csv.DictReader(f):
                rows.append({"task": row["task"],
                             "agent": f"{row.get('agent') or 'mpc'} ({row['planner']})"
                             if "planner" in row else row["agent"],
                             "env_steps": int(row["env_steps"]),
                             "eval_return": float(row["eval_return"])})  # fmt: skip
    return rows


def plot(rows: list[dict], path: Path) -> None:
    tasks = sorted({r["task"] for r in rows})
    fig, axes = task_axes(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        for agent in sorted({r["agent"] for r in rows if r["task"] == task}):
            mine = [r for r in rows if r["task"] == task and r["agent"] == agent]
            steps = sorted({r["env_steps"] for r in mine})
            mean = [np.mean([r["eval_return"] for r in mine if r["env_steps"] == s]) for s in steps]
            ax.plot(steps, mean, marker="o", label=agent)
        ax.axhline(THRESHOLDS[task], color="grey", linestyle="--", linewidth=1)
        ax.set(title=task, xlabel="env steps", ylabel="eval return")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--agents", nargs="+", default=["mpc", "sac"],
                        help="mpc, policy, mpc+policy (this project) and sac")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="budget of this project's agents (default: the task's)",
    )
    parser.add_argument(
        "--sac-steps",
        type=int,
        default=None,
        help="budget of SAC (default: --steps if given, else SAC_STEPS, longer than ours)",
    )
    parser.add_argument(
        "--label",
        default=None,
        help="name of this project's agent in the results (default: --agents)",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="keep the runs here (default: a temporary folder)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides of this project's agents")  # fmt: skip
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/sample_efficiency.csv"))  # fmt: skip
    parser.add_argument("--plot", nargs="+", type=Path, metavar="CSV",
                        help="only plot these CSVs (this one's and benchmarks.mpc's) to --out's "
                        ".png, e.g. after merging parts run separately")  # fmt: skip
    parser.add_argument("--from-runs", nargs="+", type=Path, default=None, metavar="RUN_DIR",
                        help="report these run folders instead of running")  # fmt: skip
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.from_runs:
        configs = {d: load_config(d) for d in args.from_runs}

        def kept(run_dir: Path) -> list[dict]:
            c = configs[run_dir]
            return curve_rows(c.env, args.label or c.agent, c.seed, *run_curve(run_dir))

        measured_rows(args.out, sorted({c.seed for c in configs.values()}), configs, kept)
        print(f"wrote {args.out}")
        return
    if args.plot:
        plot(read_curves(args.plot), args.out.with_suffix(".png"))
        print(f"wrote {args.out.with_suffix('.png')}")
        return
    set_threads(args.threads)
    overrides = {"threads": args.threads} | parse_overrides(args.set)

    def measure(item: tuple[str, str, int], runs_dir: Path) -> list[dict]:
        task, agent, seed = item
        if agent == "sac":
            episodes = make_config({"env": task} | overrides, command="run").loop.eval_episodes
            budget = args.sac_steps or args.steps or SAC_STEPS[task]
            curve = sac(task, seed, budget, episodes, SAC_EVAL_EVERY[task])
            return curve_rows(task, agent, seed, curve, {}, float("nan"))
        budget = args.steps or make_config({"env": task}, command="run").steps
        curve, gaps, ms = ours(task, agent, seed, budget, overrides, runs_dir)
        return curve_rows(task, args.label or agent, seed, curve, gaps, ms)

    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = args.runs_dir or Path(scratch)
        items = itertools.product(args.tasks, args.agents, args.seeds)
        rows = measured_rows(args.out, args.seeds, items, lambda item: measure(item, runs_dir))
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
