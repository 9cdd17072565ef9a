"""Epistemic uncertainty: does the model know where it is wrong? MC dropout against the ensemble.

On deterministic tasks every prediction error is the model's own (epistemic), so a good
uncertainty estimate ranks the held-out windows by their error. For each task and seed: collect
`--steps` random-action steps (few, so the model is wrong in places), fit each model kind with
the task's defaults, and on the held-out episodes compare, per start state and k, the
uncertainty `model.uncertainty(s0, actions)` (the CVAE: variance over dropout masks; the
ensemble: variance over members) with the squared error of the mean of 32 prior samples (both
summed over state-normalised dims):

- `spearman`: rank correlation of uncertainty and error over the windows (1: same order);
- `auroc`: how well the uncertainty picks out the 10 % of windows with the largest error
  (0.5: no better than chance, 1: perfectly);
- `ratio`: mean uncertainty over mean squared error (1: the variance is the size of the error).

    python -m benchmarks.epistemic                                    # 2 tasks, 3 seeds
    python -m benchmarks.epistemic --tasks Pendulum-v1 --seeds 0 --steps 600 --max-steps 5

Writes benchmarks/results/epistemic.csv (one row per task, seed, kind and k).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from agents.configurator import make_config, set_threads
from benchmarks.common import fit_model, measured_rows, random_steps
from worldmodel.data.store import EpisodeStore
from worldmodel.forward.evaluate import sampled_rollouts
from worldmodel.forward.model import ForwardModel

TASKS = ("Pendulum-v1", "Reacher-v5")
KINDS = ("cvae", "ensemble")
KS = (1, 10)
SAMPLES = 32
TOP = 0.1  # the share of windows with the largest error that `auroc` asks to pick out


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of `x` [n], ties broken by position."""
    order = np.argsort(x, kind="stable")
    out = np.empty(len(x))
    out[order] = np.arange(len(x))
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of `x` and `y` [n]."""
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `score` [n] for the boolean labels `positive` [n]: the chance
    that a random positive scores above a random negative (Mann-Whitney U)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("auroc needs positives and negatives")
    r = ranks(score)
    return float((r[positive].sum() - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def uncertainty_and_error(
    model: ForwardModel, store: EpisodeStore, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per held-out window [N]: the model's uncertainty at step k and the squared error of its
    mean k-step prediction, both summed over state-normalised dims."""
    predicted, real, window = sampled_rollouts(model, store, k, SAMPLES, 1024, seed)
    error = ((predicted[:, -1].mean(0) - real[-1]) / model.state_std).pow(2).sum(-1)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    spread = model.uncertainty(window.obs[0], window.action, generator=generator)[-1]
    return spread.cpu().numpy(), error.cpu().numpy()


def benchmark(
    task_id: str, seed: int, steps: int, max_steps: int, kinds: tuple[str, ...] = KINDS
) -> list[dict]:
    task, store = random_steps(task_id, steps, seed)
    defaults = make_config({"env": task_id})
    train_config = replace(defaults.train, max_steps=max_steps, eval_every=min(200, max_steps))
    rows = []
    for kind in kinds:
        config = replace(defaults.model, kind=kind)
        model, fit, val = fit_model(config, train_config, task, store, torch.device("cpu"), seed)
        for k in KS:
            if len(val.window_starts(k)) == 0:
                continue
            spread, error = uncertainty_and_error(model, val, k, seed)
            worst = error >= np.quantile(error, 1 - TOP)
            row = {
                "task": task_id,
                "seed": seed,
                "kind": kind,
                "k": k,
                "spearman": spearman(spread, error),
                "auroc": auroc(spread, worst),
                "ratio": float(spread.mean() / error.mean()),
                "mse": float(error.mean() / model.state_dim),
                "windows": len(error),
                "env_steps": steps,
                "train_steps": fit.steps,
                "train_seconds": round(fit.seconds, 1),
            }
            rows.append(row)
            print(
                f"{task_id:<16} seed {seed} {kind:<9} k={k:<3} spearman {row['spearman']:.2f} "
                f"auroc {row['auroc']:.2f} ratio {row['ratio']:.2f} ({fit.seconds:.0f}s)",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2_000, help="random env steps per task")
    parser.add_argument("--max-steps", type=int, default=2_000, help="gradient steps at most")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/epistemic.csv"))
    args = parser.parse_args()
    set_threads(args.threads)
    items = [(task, seed) for task in args.tasks for seed in args.seeds]
    measured_rows(
        args.out,
        args.seeds,
        items,
        lambda item: benchmark(*item, args.steps, args.max_steps, tuple(args.kinds)),
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
