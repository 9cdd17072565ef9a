"""Planner speed: milliseconds per MPC decision on a HalfCheetah-size model (17-dim state, 6-dim
action), for each planner at its default settings, at several horizons, for one env or a batch
of envs planned together (`MPCAgent.act_batch`).

    python -m benchmarks.planner_speed                    # horizons 10 30 50, torch's threads
    taskset -c 0,1 python -m benchmarks.planner_speed --threads 2   # as on a 2-core machine
    python -m benchmarks.planner_speed --device cuda --kinds gradient --horizons 30 \
        --envs 1 64 --cuda-graphs on off                  # GPU: recorded decisions, batched

The model is untrained (speed does not depend on the weights); the cost is HalfCheetah's own.
Beside each time, the plan quality: the mean planned cost of the timed decisions (`--reference`
adds a long gradient search to compare it with). `--settings` times planner settings side by side
in one process, alternating them `--rounds` times (a speed claim is a ratio measured so), e.g.
`--kinds gradient --horizons 30 --settings iterations=6 iterations=3,latent_samples=1 --rounds 3`.
Writes benchmarks/results/planner_speed.csv.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from agents.configurator import build_model, build_planner, resolve_device, set_threads
from agents.configurator.config import ModelConfig, PlannerConfig
from agents.mpc import MPCAgent
from benchmarks.common import environment_info, field_overrides, write_csv
from envs import make_task
from worldmodel.cost.trajectory import TrajectoryCost
from worldmodel.forward.layers import frozen
from worldmodel.perception import Perception

KINDS = ("gradient", "cem", "mppi", "hybrid")
REFERENCE = {"iterations": 100, "candidates": 16}
"""`--reference`: a gradient search far longer than any default, for the plan quality."""


def time_planner(
    kind: str,
    horizon: int,
    device: torch.device,
    decisions: int,
    seed: int,
    envs: int = 1,
    cuda_graphs: bool = True,
    search: dict | None = None,
) -> tuple[float, float]:
    """Median wall time of one decision (for all `envs` at once), in milliseconds, after two
    warm-up decisions (which also record the CUDA graph, where one is), and the plan quality:
    the mean cost over the envs of the planner's plan from a cold start, every setting scored on
    the same latent draws (lower is better). `search` overrides the planner's settings."""
    task = make_task("HalfCheetah-v5")
    torch.manual_seed(seed)
    model = build_model(ModelConfig(), task.obs_dim, task.act_dim).to(device).eval()
    config = PlannerConfig(kind=kind, horizon=horizon, **(search or {}))
    agent = MPCAgent(
        model,
        Perception(task.obs_dim, device),
        TrajectoryCost(task.planning_cost, task.terminated),
        build_planner(config, task.act_dim, device),
        latent_samples=config.latent_samples,
        seed=seed,
        cuda_graphs=cuda_graphs,
    )
    obs = np.random.default_rng(seed).normal(size=(envs, task.obs_dim)).astype(np.float32)
    seconds = []
    for _ in range(decisions + 2):
        start = time.perf_counter()
        agent.act(obs[0]) if envs == 1 else agent.act_batch(obs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return 1000 * float(np.median(seconds[2:])), plan_quality(agent, obs, seed)


def plan_quality(agent: MPCAgent, obs: np.ndarray, seed: int) -> float:
    """Mean cost of the agent's planner's plans from each of `obs` [E, S], cold-started, on one
    fixed draw of the agent's latent samples (the same for every planner and setting)."""
    device, horizon = agent.model.device, agent.planner.horizon
    z = agent.model.sample_prior(
        horizon, agent.latent_samples, generator=torch.Generator(device).manual_seed(seed)
    )
    generator = torch.Generator(device).manual_seed(seed)
    costs = []
    with frozen(agent.model):
        for o in obs:
            objective = agent.objective(agent.perception(o), z)
            costs.append(agent.planner.plan(objective, generator=generator).cost)
    return float(np.mean(costs))


def timed_row(
    horizon: int,
    kind: str,
    envs: int,
    graphs: bool,
    text: str,
    search: dict,
    device: torch.device,
    decisions: int,
    seed: int,
) -> dict[str, object]:
    """One CSV row: `time_planner` of one setting, printed as it is measured."""
    planner = "gradient" if kind == "reference" else kind
    ms, cost = time_planner(planner, horizon, device, decisions, seed, envs, graphs, search)
    recorded = graphs and kind == "gradient" and device.type == "cuda"
    print(
        f"{kind:<9} {text or 'defaults':<28} horizon {horizon:>3} envs {envs:>3} "
        f"graphs {recorded!s:<5}: {ms:8.1f} ms/decision ({device}), planned cost {cost:.4f}"
    )
    return {
        "planner": kind,
        "settings": text,
        "horizon": horizon,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "envs": envs,
        "cuda_graphs": recorded,
        "ms_per_action": round(ms, 2),
        "ms_per_env": round(ms / envs, 3),
        "planned_cost": round(cost, 4),
    }


def parse_setting(text: str) -> dict[str, object]:
    """'iterations=3,latent_samples=1' -> typed `PlannerConfig` overrides ('' -> the defaults);
    an unknown field or a bad value ends the benchmark with one line (`field_overrides`)."""
    pairs = [pair for pair in text.split(",") if pair]
    config = field_overrides(PlannerConfig(), pairs, "--settings:")
    return {key: getattr(config, key) for key, _, _ in (pair.partition("=") for pair in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--horizons", nargs="+", type=int, default=[10, 30, 50])
    parser.add_argument("--decisions", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--envs", nargs="+", type=int, default=[1], help="envs per decision")
    parser.add_argument("--cuda-graphs", nargs="+", choices=("on", "off"), default=["on"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="+", default=[""], metavar="K=V[,K=V]",
                        help="planner settings timed side by side ('': the defaults)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1,
                        help="times each setting is timed, alternating")  # fmt: skip
    parser.add_argument("--reference", action="store_true",
                        help="add a long gradient search (REFERENCE) per horizon and envs: the "
                        "plan quality the others are near or far from")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/planner_speed.csv"))
    args = parser.parse_args()
    try:
        searches = [(text, parse_setting(text)) for text in args.settings]
    except SystemExit as error:  # a usage error: argparse's exit status 2
        parser.error(str(error))
    set_threads(args.threads)
    device = resolve_device(args.device)
    start = time.perf_counter()
    settings = [
        (horizon, kind, envs, graphs == "on", text, search)
        for _ in range(args.rounds)
        for horizon in args.horizons
        for kind in args.kinds
        for envs in args.envs
        for graphs in args.cuda_graphs
        for text, search in searches
    ]
    if args.reference:
        settings += [
            (h, "reference", e, False, "reference", REFERENCE)
            for h in args.horizons
            for e in args.envs
        ]
    rows = [timed_row(*setting, device, args.decisions, args.seed) for setting in settings]
    write_csv(args.out, rows, environment_info([args.seed], time.perf_counter() - start))


if __name__ == "__main__":
    main()
