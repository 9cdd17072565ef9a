"""Planners at equal wall-clock budgets: gradient, CEM, MPPI and hybrid (and pytorch-mppi's MPPI
as an outside reference) on the same learned model, from the same start states.

    python -m benchmarks.planners                       # Pendulum-v1, model trained here, 3 seeds
    python -m benchmarks.planners --run-dir runs/<run> --budget-ms 200 --threads 2
    python -m benchmarks.planners --horizons 10 --candidates 8 --seeds 0 --episode-steps 50

The model is the run folder's (`--run-dir`, from `wm train` or `wm run`) or, by default, one fitted
here to `--data-steps` random steps for at most `--train-steps` gradient steps (seeded by
`--seed`). Every episode starts from the eval env's reset on seed `s + EVAL_SEED_OFFSET` for `s` in
`--seeds`, the seed of `wm run`'s evaluations, so no start state is training data.

Equal budgets: for each planner and setting, the iteration count (gradient steps, CEM/MPPI
rounds, hybrid's rounds of both, pytorch-mppi `command` calls) is calibrated so that one decision
takes about `--budget-ms`: a decision is timed at 1 and 4 iterations, the count is read off the
straight line through them, timed, and read off again (time is near-linear in iterations). Where
one iteration already exceeds the budget the planner runs one and the CSV's ms_per_action shows
the overshoot; that column is the mean over the episode's decisions.

Axes: horizons `--horizons` at `--at-candidates` c, and candidates `--candidates` at horizon
`--at-horizon`. One count c maps onto every planner: the gradient planner optimises c sequences
(the warm start and c - 1 restarts); CEM, MPPI and pytorch-mppi sample `--samples-per-candidate`
times c sequences per round (25 x 8 = 200, the config's default population); hybrid samples that
many with CEM and refines the best c by gradient. The CSV's `sequences` column is that count.

pytorch-mppi (`pip install pytorch-mppi`, in the `bench` extra) gets the same objective as
`MPCAgent`: the task's planning cost, predicted terminations, and per decision K = latent_samples
latents z ~ N(0, I) drawn once and shared by all samples and iterations (common random numbers,
as `MPCAgent` does), the cost averaged over them (its `rollout_samples`). Its noise std is a
quarter of the action range and lambda our MPPI temperature, as for our MPPI; unlike ours it adds
MPPI's perturbation cost and shifts its plan with a zero appended (ours repeats the last action).
Without the package it is skipped.

Writes benchmarks/results/planners.csv (one row per planner, setting and seed) and .png (return
against horizon and candidates, ms/action against horizon).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from agents.app.evaluate import EVAL_SEED_OFFSET
from agents.app.runs.folder import load_world_model
from agents.configurator import (
    build_agent,
    make_config,
    resolve_device,
    set_threads,
)
from agents.configurator.config import Config
from agents.configurator.fields import with_overrides
from benchmarks.common import environment_info, fit_on_random_steps, write_csv
from benchmarks.mpc import parse_overrides
from envs import Task, make_task
from worldmodel.data.rollout import run_episode
from worldmodel.forward.model import ForwardModel
from worldmodel.perception import Perception

OURS = ("gradient", "cem", "mppi", "hybrid")
REFERENCE = "pytorch-mppi"
Act = Callable[[np.ndarray], np.ndarray]
MakeAct = Callable[[int, int], Act]  #: (iterations, seed) -> a fresh controller's act


def learned_model(args: argparse.Namespace, device: torch.device) -> tuple[Config, ForwardModel]:
    """The run folder's model and config, or a model fitted here to random steps of `args.env`."""
    overrides = parse_overrides(args.set)
    if args.run_dir is not None:
        loaded = load_world_model(args.run_dir, device)
        return with_overrides(loaded.config, overrides), loaded.model
    config = make_config(
        {
            "env": args.env,
            "seed": args.seed,
            "steps": args.data_steps,
            "train.max_steps": args.train_steps,
            **overrides,
        }
    )
    model, _ = fit_on_random_steps(config, device)
    return config, model


class ReferenceMPPI:
    """pytorch-mppi's MPPI planning through `model` with `MPCAgent`'s objective.

    Its dynamics carry x = [s_t, s_{t-1}, alive]: its running cost sees only the state after a
    step, while the task's cost needs the one before too (Pendulum costs the pre-step angle), and
    `alive` zeroes the cost after a predicted termination as `MPCAgent` does (the current,
    real state is never terminal, so the first step always counts).
    """

    def __init__(
        self, model: ForwardModel, task: Task, config: Config, samples: int, iterations: int
    ) -> None:
        from pytorch_mppi import MPPI

        self.model, self.task, self.iterations = model, task, iterations
        self.horizon = config.planner.horizon
        self.latents = config.planner.latent_samples if model.stochastic else 1
        self.perception = Perception(task.obs_dim, model.device)
        self.generator = torch.Generator(device=model.device).manual_seed(config.seed)
        torch.manual_seed(config.seed)  # pytorch-mppi draws its noise from torch's global RNG
        act_dim, device = task.act_dim, model.device
        self.controller = MPPI(
            self._dynamics,
            self._cost,
            2 * task.obs_dim + 1,
            noise_sigma=0.25 * torch.eye(act_dim, device=device),  # std 0.5 = our MPPI's sigma
            num_samples=samples,
            horizon=self.horizon,
            device=device,
            lambda_=config.planner.temperature,
            u_min=-torch.ones(act_dim, device=device),
            u_max=torch.ones(act_dim, device=device),
            U_init=torch.zeros(self.horizon, act_dim, device=device),
            step_dependent_dynamics=True,
            rollout_samples=self.latents,
        )
        self.z = torch.empty(0)  # [T, K, Z], drawn anew at each decision

    def _dynamics(self, x: Tensor, u: Tensor, t: int) -> Tensor:
        dim = self.task.obs_dim
        s, alive = x[:, :dim], x[:, -1:]
        if self.task.terminated is not None:
            alive = alive * ~self.task.terminated(s)[:, None]
        # Rows are latent-major (pytorch-mppi repeats the K samples once per latent).
        z = self.z[t].repeat_interleave(len(x) // self.latents, dim=0)
        return torch.cat([self.model.step(s, u, z), s, alive], dim=1)

    def _cost(self, x: Tensor, u: Tensor, t: int) -> Tensor:
        dim = self.task.obs_dim
        return self.task.planning_cost(x[:, dim : 2 * dim], u, x[:, :dim]) * x[:, -1]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """One decision: `iterations` MPPI updates of the (shifted) nominal sequence."""
        state = self.perception(obs)
        x = torch.cat([state, state, state.new_ones(1)])
        self.z = self.model.sample_prior(self.horizon, self.latents, generator=self.generator)
        with torch.no_grad():
            for i in range(self.iterations):
                action = self.controller.command(x, shift_nominal_trajectory=i == 0)
        return action.clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)


def controllers(
    planner: str,
    config: Config,
    task: Task,
    model: ForwardModel,
    horizon: int,
    c: int,
    per_candidate: int,
) -> MakeAct:
    """(iterations, seed) -> act of a fresh controller of `planner` at `horizon` with c
    candidates; the rest of the planner's settings are `config`'s."""
    planner_config = dataclasses.replace(
        config.planner,
        # pytorch-mppi reads only horizon, temperature and latent_samples of it; 'mppi' keeps
        # the config valid.
        kind=planner if planner in OURS else "mppi",
        horizon=horizon,
        candidates=c,
        population=per_candidate * c,
    )

    def make(iterations: int, seed: int) -> Act:
        run = dataclasses.replace(
            config,
            seed=seed,
            agent="mpc",
            planner=dataclasses.replace(planner_config, iterations=iterations),
        )
        if planner == REFERENCE:
            return ReferenceMPPI(model, task, run, per_candidate * c, iterations).act
        return build_agent(run, task, model, model.device).act

    return make


def decision_ms(act: Act, obs: np.ndarray, repeats: int = 3) -> float:
    """Median ms of a decision from `obs`, after one warm-up (first-call allocations)."""
    act(obs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        act(obs)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def calibrate(make: MakeAct, obs: np.ndarray, budget_ms: float, cap: int) -> int:
    """Iterations whose decision takes about `budget_ms`, in [1, cap] (see the module doc)."""
    t_one = decision_ms(make(1, 0), obs)
    high = min(4, cap)
    if high == 1 or t_one >= budget_ms:
        return 1

    def read_off(iterations: int, ms: float) -> int:
        """Where the line through (1, t_one) and (iterations, ms) reaches the budget."""
        per_iteration = max((ms - t_one) / (iterations - 1), 1e-6)
        return int(np.clip(1 + (budget_ms - t_one) / per_iteration, 1, cap))

    guess = read_off(high, decision_ms(make(high, 0), obs))
    if guess in (1, high):
        return guess
    # One correction from the guess itself: per-iteration time is not quite constant (CEM's
    # population shrinks, the gradient planner may stop early).
    return read_off(guess, decision_ms(make(guess, 0), obs))


def episode(task: Task, act: Act, seed: int, steps: int | None) -> tuple[float, float]:
    """Real return of one episode of `act` on eval seed `seed`, and its mean ms per decision."""
    env = task.make_env(seed=seed + EVAL_SEED_OFFSET)
    seconds: list[float] = []

    def timed(obs: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        action = act(obs)
        seconds.append(time.perf_counter() - start)
        return action

    result = run_episode(env, timed, seed=seed + EVAL_SEED_OFFSET, max_steps=steps)
    env.close()
    return result.episode_return, 1000 * float(np.mean(seconds))


def plot(rows: list[dict], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    panels = (
        (axes[0], "horizon", "candidates", args.at_candidates, "return"),
        (axes[1], "candidates", "horizon", args.at_horizon, "return"),
        (axes[2], "horizon", "candidates", args.at_candidates, "ms_per_action"),
    )
    for ax, x, fixed, value, y in panels:
        for planner in dict.fromkeys(r["planner"] for r in rows):
            mine = [r for r in rows if r["planner"] == planner and r[fixed] == value]
            xs = sorted({r[x] for r in mine})
            values = [[r[y] for r in mine if r[x] == v] for v in xs]
            mean, std = [np.mean(v) for v in values], [np.std(v) for v in values]
            ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=planner)
        ax.set(xlabel=x, ylabel=y.replace("_", " "), title=f"at {fixed} {value}")
    axes[0].set_xticks(args.horizons)
    axes[2].set_xticks(args.horizons)
    # Log-spaced counts; each tick names the gradient candidates and the samples per round.
    axes[1].set_xscale("log")
    per = args.samples_per_candidate
    axes[1].set_xticks(args.candidates, [f"{c} / {per * c}" for c in args.candidates])
    axes[1].minorticks_off()
    axes[1].set_xlabel("candidates / samples per round")
    axes[2].axhline(args.budget_ms, color="grey", linestyle="--", linewidth=1, label="budget")
    axes[0].legend()
    fig.suptitle(f"{rows[0]['env']}: planners at {args.budget_ms:g} ms per action")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pendulum-v1", help="task of the model trained here")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="use this run folder's model instead of training one",
    )
    parser.add_argument("--data-steps", type=int, default=10_000, help="random steps to fit on")
    parser.add_argument("--train-steps", type=int, default=2_000, help="gradient steps at most")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model trained here")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="eval episodes")
    parser.add_argument("--planners", nargs="+", default=[*OURS, REFERENCE])
    parser.add_argument("--horizons", nargs="+", type=int, default=[10, 30, 50])
    parser.add_argument("--candidates", nargs="+", type=int, default=[3, 8, 16])
    parser.add_argument("--at-candidates", type=int, default=8, help="c of the horizon sweep")
    parser.add_argument("--at-horizon", type=int, default=30, help="horizon of the c sweep")
    parser.add_argument(
        "--samples-per-candidate",
        type=int,
        default=25,
        help="sampling planners draw this many sequences per candidate",
    )
    parser.add_argument("--budget-ms", type=float, default=100.0, help="wall time per action")
    parser.add_argument("--max-iterations", type=int, default=200)
    parser.add_argument("--episode-steps", type=int, default=None, help="cut episodes (smoke)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. model.hidden=128 planner.latent_samples=1",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/planners.csv"))
    parser.add_argument("--plot", nargs="+", type=Path, default=None, metavar="CSV",
                        help="only plot these CSVs (merged parts) to --out's .png")  # fmt: skip
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.plot:
        rows = [{**r, "horizon": int(r["horizon"]), "candidates": int(r["candidates"]),
                 "return": float(r["return"]), "ms_per_action": float(r["ms_per_action"])}
                for path in args.plot for r in csv.DictReader(path.open())]  # fmt: skip
        plot(rows, args, args.out.with_suffix(".png"))
        print(f"wrote {args.out.with_suffix('.png')}")
        return
    set_threads(args.threads)
    device = resolve_device(args.device)
    planners = list(args.planners)
    if REFERENCE in planners:
        try:
            import pytorch_mppi  # noqa: F401
        except ImportError:
            print(f"{REFERENCE} not installed (pip install pytorch-mppi): reference skipped")
            planners.remove(REFERENCE)
    start = time.perf_counter()
    config, model = learned_model(args, device)
    task = make_task(config.env)
    # Calibration decides from the first episode's start state.
    env = task.make_env()
    obs, _ = env.reset(seed=args.seeds[0] + EVAL_SEED_OFFSET)
    env.close()
    # The horizon sweep at c = at_candidates and the c sweep at at_horizon share one setting.
    settings = dict.fromkeys(
        [(h, args.at_candidates) for h in args.horizons]
        + [(args.at_horizon, c) for c in args.candidates]
    )
    rows: list[dict] = []
    for horizon, c in settings:
        for planner in planners:
            make = controllers(planner, config, task, model, horizon, c, args.samples_per_candidate)
            iterations = calibrate(make, obs, args.budget_ms, args.max_iterations)
            for seed in args.seeds:
                ret, ms = episode(task, make(iterations, seed), seed, args.episode_steps)
                rows.append(
                    {
                        "env": task.id,
                        "planner": planner,
                        "horizon": horizon,
                        "candidates": c,
                        "sequences": c if planner == "gradient" else args.samples_per_candidate * c,
                        "iterations": iterations,
                        "seed": seed,
                        "return": round(ret, 2),
                        "ms_per_action": round(ms, 1),
                        "budget_ms": args.budget_ms,
                    }
                )
                print(
                    f"{planner:<12} horizon {horizon:>3} c {c:>3}: {iterations:>3} iterations, "
                    f"seed {seed}: return {ret:8.1f}, {ms:6.1f} ms/action"
                )
            # Written after every setting, so a long benchmark cut short keeps what it measured.
            info = environment_info(args.seeds, time.perf_counter() - start)
            info |= {"device": str(device), "budget_ms": args.budget_ms, "set": args.set}
            info |= (
                {"model": str(args.run_dir)}
                if args.run_dir
                else {
                    "model": "trained here",
                    "model_seed": args.seed,
                    "data_steps": args.data_steps,
                    "train_steps": args.train_steps,
                }
            )
            write_csv(args.out, rows, info)
    plot(rows, args, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
