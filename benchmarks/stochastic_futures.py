"""Stochastic futures: do the CVAE's prior samples reproduce the real outcomes' modes?

For each stochastic task and seed: collect `--steps` random-action steps, split by episode,
train each model kind with the task's default config (presets included), and score on the
held-out episodes:

* the energy score of 32 prior samples of the k-step prediction (k = 1, 10, 25), on the state
  dims the task's randomness moves and on the full state, and the deterministic model's beside
  it (its samples coincide: its score is its error norm);
* the coverage of the samples' central 80 % interval (0.8 when calibrated);
* the share of one-step samples at a real outcome and at the outcomes' mean (`Task.outcomes`);
* action sensitivity: how far the one-step prediction moves when the action is swapped for
  another window's, over how far the real outcomes' mean moves (1 is right, 0 ignores actions),
  with z from the prior; `cvae-no-dropout` (latent_dropout 0) is the same CVAE without latent
  dropout, for what PPUU introduced it for; `ensemble` is the PETS-style probabilistic ensemble
  (`worldmodel.forward.ensemble`), the baseline beside the CVAE.

    python -m benchmarks.stochastic_futures                   # the acceptance run (3 seeds)
    python -m benchmarks.stochastic_futures --seeds 0 --steps 2000 --max-steps 100  # smoke

Writes benchmarks/results/stochastic_futures.csv (one row per task, seed, kind and k), rewritten
after every task and seed; `--resume` skips those already in it.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from agents.configurator import make_config, set_threads
from agents.configurator.config import Config, ModelConfig
from benchmarks.common import (
    environment_info,
    field_overrides,
    fit_model,
    random_steps,
    write_csv,
)
from envs import Task
from worldmodel.data.store import EpisodeStore
from worldmodel.forward.evaluate import k_step_errors, one_step_mode_shares, sample_scores
from worldmodel.forward.model import ForwardModel

TASKS = ("GustyLedge-v0", "PushedInvertedPendulum-v0")
KINDS = ("deterministic", "cvae", "cvae-no-dropout", "ensemble")
KS = (1, 10, 25)
SAMPLES = 32


def model_config(kind: str, defaults: ModelConfig) -> ModelConfig:
    """The task's default model of `kind`; cvae-no-dropout is its CVAE without latent dropout."""
    if kind == "cvae-no-dropout":
        return replace(defaults, kind="cvae", latent_dropout=0.0)
    return replace(defaults, kind=kind)


@torch.no_grad()
def action_sensitivity(model: ForwardModel, store: EpisodeStore, task: Task, seed: int) -> float:
    """Mean move of the one-step prior-sample prediction when each window's action is swapped
    for the next window's, over the mean move of the real outcomes' mean (state-normalised)."""
    assert task.outcomes is not None
    model.eval()
    window = store.spaced_windows(1, 1024).to(model.device)
    s, a = window.obs[0], window.action[0]
    other = a.roll(1, 0)
    z = model.sample_prior(len(s), generator=torch.Generator(model.device).manual_seed(seed))
    moved = ((model.step(s, a, z) - model.step(s, other, z)) / model.state_std).norm(dim=-1)
    s_np = s.cpu().numpy()
    real = task.outcomes(s_np, a.cpu().numpy()).mean(0) - task.outcomes(
        s_np, other.cpu().numpy()
    ).mean(0)
    real_moved = np.linalg.norm(real / model.state_std.cpu().numpy(), axis=-1)
    return moved.mean().item() / max(float(real_moved.mean()), 1e-12)


def benchmark(
    task_id: str,
    steps: int,
    max_steps: int,
    seed: int,
    kinds: tuple[str, ...],
    model_fields: tuple[str, ...] = (),
    train_fields: tuple[str, ...] = (),
) -> list[dict]:
    task, store = random_steps(task_id, steps, seed)
    defaults = make_config({"env": task_id})  # the task's presets (e.g. its training horizon)
    train_config = field_overrides(
        replace(defaults.train, max_steps=max_steps, eval_every=min(200, max_steps)),
        list(train_fields),
        "--train",
    )
    rows = []
    for kind in kinds:
        config = model_config(kind, field_overrides(defaults.model, list(model_fields), "--model"))
        model, fit, val = fit_model(config, train_config, task, store, torch.device("cpu"), seed)
        at_mode, at_mean = one_step_mode_shares(
            model, val, task.outcomes, task.random_dims, SAMPLES, seed=seed
        )
        sensitivity = action_sensitivity(model, val, task, seed)
        errors = {e.k: e.model for e in k_step_errors(model, val, KS, seed=seed)}
        for score in sample_scores(model, val, KS, SAMPLES, task.random_dims, seed=seed):
            rows.append(
                {
                    "task": task_id,
                    "seed": seed,
                    "kind": kind,
                    "k": score.k,
                    "energy": score.energy,
                    "energy_full": score.energy_full,
                    "coverage": score.coverage,
                    "mse": errors[score.k],
                    "at_mode": at_mode if score.k == 1 else "",
                    "at_mean": at_mean if score.k == 1 else "",
                    "action_sensitivity": sensitivity if score.k == 1 else "",
                    "windows": score.windows,
                    "env_steps": steps,
                    "train_steps": fit.steps,
                    "train_seconds": round(fit.seconds, 1),
                }
            )
        one = next(r for r in rows if r["kind"] == kind and r["k"] == 1)
        print(
            f"{task_id:<26} seed {seed} {kind:<16} ES k=1 {one['energy']:.4f} at mode "
            f"{at_mode:.2f} at mean {at_mean:.2f} action sensitivity {sensitivity:.2f} "
            f"({fit.seconds:.0f}s)",
            flush=True,
        )
    return rows


def summary(rows: list[dict]) -> list[str]:
    """Per task and k: the CVAE's energy score over the deterministic model's, mean and sd over
    seeds, on the random dims (full state in brackets), and its one-step mode shares."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for k in KS:
            ratios, full = [], []
            for seed in sorted({r["seed"] for r in rows if r["task"] == task}):
                pick = {
                    r["kind"]: r
                    for r in rows
                    if r["task"] == task and r["seed"] == seed and r["k"] == k
                }
                if "cvae" in pick and "deterministic" in pick:
                    ratios.append(pick["cvae"]["energy"] / pick["deterministic"]["energy"])
                    full.append(pick["cvae"]["energy_full"] / pick["deterministic"]["energy_full"])
            if ratios:
                lines.append(
                    f"{task:<26} k={k:<3} ES cvae/deterministic {np.mean(ratios):.3f} "
                    f"+- {np.std(ratios):.3f} (full state {np.mean(full):.3f}) "
                    f"seeds: {', '.join(f'{r:.3f}' for r in ratios)}"
                )
        for kind in dict.fromkeys(r["kind"] for r in rows if r["task"] == task):
            ones = [r for r in rows if r["task"] == task and r["kind"] == kind and r["k"] == 1]
            lines.append(
                f"{task:<26} {kind:<16} at mode {np.mean([r['at_mode'] for r in ones]):.3f} "
                f"at mean {np.mean([r['at_mean'] for r in ones]):.3f} action sensitivity "
                f"{np.mean([r['action_sensitivity'] for r in ones]):.2f}"
            )
    return lines


def _read(path: Path) -> list[dict]:
    """Rows of an earlier run (numbers parsed), for `--resume`."""
    if not path.exists():
        return []
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("task") and not r["task"].startswith("#")]
    for r in rows:
        for key, value in r.items():
            if key not in ("task", "kind") and value != "":
                r[key] = int(value) if value.lstrip("-").isdigit() else float(value)  # nan, inf
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10_000, help="random env steps per task")
    parser.add_argument("--max-steps", type=int, default=Config().train.max_steps)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out")
    parser.add_argument(
        "--model", nargs="*", default=[], metavar="FIELD=VALUE",
        help="model config fields on top of the task's, e.g. beta=2.0",
    )  # fmt: skip
    parser.add_argument("--train", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="train config fields, e.g. lr_final=1.0")  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/stochastic_futures.csv")
    )
    args = parser.parse_args()
    set_threads(args.threads)
    start = time.perf_counter()
    rows = _read(args.out) if args.resume else []
    for task in args.tasks:
        for seed in args.seeds:
            done = {r["kind"] for r in rows if r["task"] == task and r["seed"] == seed}
            todo = tuple(k for k in args.kinds if k not in done)
            if todo:
                rows += benchmark(
                    task, args.steps, args.max_steps, seed, todo, tuple(args.model),
                    tuple(args.train),
                )  # fmt: skip
                info = environment_info(args.seeds, time.perf_counter() - start)
                info["model"], info["train"] = args.model, args.train
                write_csv(args.out, rows, info)
    print("\n".join(summary(rows)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
