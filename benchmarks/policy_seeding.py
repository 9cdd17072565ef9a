"""mpc+policy against mpc at equal time per action, with the policy alone beside them.

    python -m benchmarks.policy_seeding --run-dirs runs/<run with a policy>   # eval seeds 0 1 2
    python -m benchmarks.policy_seeding --run-dirs RUN --budget-ms 50 --seeds 0 --episode-steps 100
    python -m benchmarks.policy_seeding --run-dirs RUN --set planner.terminal_value=false

Each run folder (from `wm run --agent policy` or `--agent mpc+policy`: it must hold a trained
policy and critic) gives one world model, policy and critic. On them three actors play the same
eval episodes (start states of `wm run`'s evaluations): `mpc`, the planner alone; `mpc+policy`,
the same planner warm-started from the policy's proposal and ending its plan in the critic's
value (unless `planner.terminal_value` is off: `--set` overrides the run's config); and
`policy`, the policy alone. Both planners get the same wall-clock budget per decision:
their iteration counts are calibrated to `--budget-ms` as in `benchmarks.planners`. Writes
benchmarks/results/policy_seeding.csv: one row per run, actor and seed.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from agents.app.evaluate import EVAL_SEED_OFFSET
from agents.app.runs.folder import load_policy_modules, load_world_model, model_stats
from agents.configurator import (
    PolicyParts,
    build_agent,
    build_penalty,
    build_policy_parts,
    resolve_device,
    set_threads,
)
from agents.configurator.config import Config
from agents.configurator.fields import with_overrides
from agents.policy import PolicyAgent
from benchmarks.common import measured_rows
from benchmarks.mpc import parse_overrides
from benchmarks.planners import Act, MakeAct, calibrate, episode
from envs import Task
from worldmodel.forward.model import ForwardModel

PLANNING = ("mpc", "mpc+policy")


def planning_actor(
    agent: str, config: Config, task: Task, model: ForwardModel, parts: PolicyParts
) -> MakeAct:
    """(iterations, seed) -> act of a fresh `agent` ('mpc' or 'mpc+policy') on the run's modules."""

    def make(iterations: int, seed: int) -> Act:
        run = dataclasses.replace(
            config,
            seed=seed,
            agent=agent,
            planner=dataclasses.replace(config.planner, iterations=iterations),
        )
        return build_agent(run, task, model, model.device, parts).act

    return make


def one_run(run_dir: Path, args: argparse.Namespace, device: torch.device) -> list[dict]:
    loaded = load_world_model(run_dir, device)
    config, task, model = loaded.config, loaded.task, loaded.model
    config = with_overrides(config, parse_overrides(args.set))
    penalty = build_penalty(config.policy, model)
    parts = build_policy_parts(config, task, model, model_stats(model), device, penalty)
    load_policy_modules(parts, loaded.groups)
    env = task.make_env()
    obs, _ = env.reset(seed=args.seeds[0] + EVAL_SEED_OFFSET)
    env.close()
    actors: dict[str, tuple[MakeAct, int]] = {}
    for agent in PLANNING:
        make = planning_actor(agent, config, task, model, parts)
        actors[agent] = (make, calibrate(make, obs, args.budget_ms, args.max_iterations))
    actors["policy"] = (lambda _iterations, seed: PolicyAgent(parts.policy, seed=seed).act, 0)
    rows = []
    for agent, (make, iterations) in actors.items():
        for seed in args.seeds:
            ret, ms = episode(task, make(iterations, seed), seed, args.episode_steps)
            rows.append(
                {
                    "env": task.id,
                    "run": run_dir.name,
                    "run_seed": config.seed,
                    "agent": agent,
                    "iterations": iterations,
                    "horizon": config.planner.horizon,
                    "terminal_value": config.planner.terminal_value,
                    "budget_ms": args.budget_ms,
                    "seed": seed,
                    "return": round(ret, 2),
                    "ms_per_action": round(ms, 2),
                }
            )
            print(f"{task.id} {run_dir.name} {agent:<10} seed {seed}: {ret:8.1f}, {ms:6.1f} ms")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dirs", nargs="+", type=Path, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="eval episodes")
    parser.add_argument("--budget-ms", type=float, default=100.0, help="wall time per action")
    parser.add_argument("--max-iterations", type=int, default=200)
    parser.add_argument("--episode-steps", type=int, default=None, help="default: the task's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="run config overrides, e.g. planner.terminal_value=false")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/policy_seeding.csv"))
    args = parser.parse_args()
    set_threads(args.threads)
    device = resolve_device(args.device)
    rows = measured_rows(args.out, args.seeds, args.run_dirs, lambda d: one_run(d, args, device))
    by_agent = {a: [r["return"] for r in rows if r["agent"] == a] for a in (*PLANNING, "policy")}
    print(", ".join(f"{a} {np.mean(v):.1f}" for a, v in by_agent.items() if v))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
