"""Model accuracy: k-step normalised MSE of the CVAE and the deterministic model vs s' = s.

For each task: collect `--steps` random-action steps, split by episode, train each model kind
with the default config, and report k-step errors on the held-out episodes with training time.

    python -m benchmarks.model_accuracy                       # the acceptance run (20k steps)
    python -m benchmarks.model_accuracy --steps 2000 --max-steps 50 --tasks Pendulum-v1  # smoke

Writes benchmarks/results/model_accuracy.csv (one row per task, kind and k).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from agents.config import Config, ModelConfig, TrainConfig
from agents.configurator import build_model, build_trainer, set_threads
from benchmarks.common import environment_info, write_csv
from envs import make_task
from worldmodel.data import EpisodeStore
from worldmodel.evaluate import k_step_errors
from worldmodel.rollout import collect, random_policy

TASKS = ("Pendulum-v1", "Reacher-v5", "HalfCheetah-v5")
KS = (1, 5, 10, 25)


def benchmark(
    task_id: str, steps: int, max_steps: int, seed: int, kinds: tuple[str, ...]
) -> list[dict]:
    task = make_task(task_id)
    env = task.make_env(seed=seed)
    store = EpisodeStore(task.obs_dim, task.act_dim)
    collect(env, random_policy(env, seed), steps, store, seed)
    train_config = TrainConfig(max_steps=max_steps, eval_every=min(200, max_steps))
    train, val = store.split(train_config.val_fraction, seed)
    rows = []
    for kind in kinds:
        torch.manual_seed(seed)
        model = build_model(ModelConfig(kind=kind), task.obs_dim, task.act_dim)
        model.set_normalization(train.stats())
        trainer = build_trainer(train_config, model, seed)
        fit = trainer.fit(
            train,
            val,
            horizon=train_config.horizon,
            batch_size=train_config.batch_size,
            max_steps=train_config.max_steps,
            eval_every=train_config.eval_every,
            patience=train_config.patience,
            progress=False,
        )
        for e in k_step_errors(model, val, KS, seed=seed):
            rows.append(
                {
                    "task": task_id,
                    "kind": kind,
                    "seed": seed,
                    "env_steps": steps,
                    "k": e.k,
                    "model_mse": e.model,
                    "baseline_mse": e.baseline,
                    "ratio": e.model / e.baseline,
                    "train_steps": fit.steps,
                    "train_seconds": round(fit.seconds, 1),
                }
            )
            print(
                f"{task_id:<16} {kind:<13} k={e.k:<3} model {e.model:.4f} baseline "
                f"{e.baseline:.4f} ratio {e.model / e.baseline:.3f} ({fit.seconds:.0f}s)"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--steps", type=int, default=20_000, help="random env steps per task")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=Config().train.max_steps,
        help="gradient steps at most per model",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=["cvae", "deterministic"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/model_accuracy.csv"))
    args = parser.parse_args()
    set_threads(args.threads)
    start = time.perf_counter()
    rows = [
        row
        for task in args.tasks
        for row in benchmark(task, args.steps, args.max_steps, args.seed, tuple(args.kinds))
    ]
    info = environment_info(seeds=[args.seed], wall_seconds=time.perf_counter() - start)
    write_csv(args.out, rows, info)
    ten = [r for r in rows if r["k"] == 10]
    for r in ten:
        print(f"10-step ratio {r['task']:<16} {r['kind']:<13} {r['ratio']:.3f}")
    print(f"wrote {args.out}; mean 10-step ratio {np.mean([r['ratio'] for r in ten]):.3f}")


if __name__ == "__main__":
    main()
