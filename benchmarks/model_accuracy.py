"""Model accuracy: k-step normalised MSE and sample spread of the CVAE and the deterministic
model vs s' = s.

For each task: collect `--steps` random-action steps, split by episode, train each model kind
with the default config, and report on the held-out episodes, for each k, the k-step error, the
spread of the k-step predictions over latent samples and over dropout masks, the energy score
of prior samples and the coverage of their central 80 % interval (`sample_scores`, full state),
and training time.

    python -m benchmarks.model_accuracy                       # the acceptance run (20k steps)
    python -m benchmarks.model_accuracy --steps 2000 --max-steps 50 --tasks Pendulum-v1  # smoke

Spreads are in the units of `model_mse` (state-normalised, averaged over state dims): the variance
of the k-step prediction over `SAMPLES` draws, averaged over the start states. `latent_spread`
draws z from the prior with dropout off (0 for the deterministic model, which has no z);
`dropout_spread` draws dropout masks (MC dropout, `ForwardModel.uncertainty`) with one z.

Writes benchmarks/results/model_accuracy.csv (one row per task, kind and k) and a .png beside it
(k-step error against k per task, spreads dashed and dotted).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from agents.configurator import set_threads
from agents.configurator.config import Config, ModelConfig, TrainConfig
from benchmarks.common import (
    environment_info,
    field_overrides,
    fit_model,
    random_steps,
    task_axes,
    write_csv,
)
from worldmodel.data.store import EpisodeStore
from worldmodel.forward.evaluate import k_step_errors, sample_scores
from worldmodel.forward.model import ForwardModel

TASKS = ("Pendulum-v1", "Reacher-v5", "HalfCheetah-v5")
KS = (1, 5, 10, 25)
SAMPLES = 8  # draws per start state for the spreads
MAX_WINDOWS = 2048  # start states, as in `k_step_errors`
CPU = torch.device("cpu")


@torch.no_grad()
def spreads(
    model: ForwardModel, store: EpisodeStore, ks: tuple[int, ...], seed: int
) -> dict[int, tuple[float, float]]:
    """k -> (latent spread, dropout spread) of the k-step predictions from held-out windows.

    The windows are those of `k_step_errors` (evenly spaced), so both figures describe the same
    start states; a k longer than every episode is skipped, as there.
    """
    model.eval()
    result = {}
    for k in ks:
        if len(store.window_starts(k)) == 0:
            continue
        window = store.spaced_windows(k, MAX_WINDOWS).to(model.device)
        s0, actions = window.obs[0], window.action
        generator = torch.Generator(device=model.device).manual_seed(seed)
        latent = 0.0  # without z every draw is the same prediction
        if model.stochastic:
            # SAMPLES copies of each window side by side in the batch, each with its own z.
            final = model.rollout(
                s0.repeat(SAMPLES, 1), actions.repeat(1, SAMPLES, 1), generator=generator
            )[-1]
            normalised = (final / model.state_std).view(SAMPLES, *s0.shape)
            latent = normalised.var(0).mean().item()
        # `uncertainty` sums the variance over normalised dims; / state_dim gives the mean.
        dropout = model.uncertainty(s0, actions, n=SAMPLES, generator=generator)[-1]
        result[k] = (latent, dropout.mean().item() / model.state_dim)
    return result


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
    train_config = field_overrides(
        TrainConfig(max_steps=max_steps, eval_every=min(200, max_steps)),
        list(train_fields),
        "--train",
    )
    rows = []
    for kind in kinds:
        model_config = field_overrides(ModelConfig(kind=kind), list(model_fields), "--model")
        model, fit, val = fit_model(model_config, train_config, task, store, CPU, seed)
        spread = spreads(model, val, KS, seed)
        scores = {s.k: s for s in sample_scores(model, val, KS, seed=seed)}
        for e in k_step_errors(model, val, KS, max_windows=MAX_WINDOWS, seed=seed):
            latent, dropout = spread[e.k]
            rows.append(
                {
                    "task": task_id,
                    "kind": kind,
                    "seed": seed,
                    "env_steps": steps,
                    "k": e.k,
                    "model_mse": e.model,
                    "mean_mse": e.mean,
                    "baseline_mse": e.baseline,
                    "ratio": e.model / e.baseline,
                    "latent_spread": latent,
                    "dropout_spread": dropout,
                    "energy": scores[e.k].energy_full,
                    "coverage": scores[e.k].coverage,
                    "train_steps": fit.steps,
                    "train_seconds": round(fit.seconds, 1),
                }
            )
            print(
                f"{task_id:<16} {kind:<13} k={e.k:<3} model {e.model:.4f} mean {e.mean:.4f} "
                f"baseline {e.baseline:.4f} ratio {e.model / e.baseline:.3f} spread z {latent:.2g} "
                f"dropout {dropout:.2g} ({fit.seconds:.0f}s)"
            )
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """k-step error against k per task, one colour per kind: error solid, latent spread dashed,
    dropout spread dotted, the constant baseline grey; log y, so zero spreads are left out."""
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = task_axes(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        mine = [r for r in rows if r["task"] == task]
        for i, kind in enumerate(dict.fromkeys(r["kind"] for r in mine)):
            of_kind = [r for r in mine if r["kind"] == kind]
            for column, style, label in (
                ("model_mse", "-", kind),
                ("latent_spread", "--", f"{kind} spread (z)"),
                ("dropout_spread", ":", f"{kind} spread (dropout)"),
            ):
                points = [(r["k"], r[column]) for r in of_kind if r[column] > 0]
                if points:
                    ax.plot(*zip(*points, strict=True), style, color=f"C{i}", marker="o",
                            markersize=3, label=label)  # fmt: skip
        baseline = [(r["k"], r["baseline_mse"]) for r in mine if r["kind"] == mine[0]["kind"]]
        ax.plot(*zip(*baseline, strict=True), color="grey", linewidth=1, label="s' = s")
        ax.set(title=task, xlabel="k (steps)", ylabel="normalised MSE / variance", yscale="log")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    parser.add_argument("--model", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="model config fields, e.g. beta=2.0")  # fmt: skip
    parser.add_argument("--train", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="train config fields, e.g. lr_final=1.0")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/model_accuracy.csv"))
    args = parser.parse_args()
    set_threads(args.threads)
    start = time.perf_counter()
    rows = [
        row
        for task in args.tasks
        for row in benchmark(
            task,
            args.steps,
            args.max_steps,
            args.seed,
            tuple(args.kinds),
            tuple(args.model),
            tuple(args.train),
        )
    ]
    info = environment_info(seeds=[args.seed], wall_seconds=time.perf_counter() - start)
    info["model"], info["train"] = args.model, args.train
    write_csv(args.out, rows, info)
    plot(rows, args.out.with_suffix(".png"))
    ten = [r for r in rows if r["k"] == 10]
    for r in ten:
        print(f"10-step ratio {r['task']:<16} {r['kind']:<13} {r['ratio']:.3f}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}; "
          f"mean 10-step ratio {np.mean([r['ratio'] for r in ten]):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
