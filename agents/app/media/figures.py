"""Matplotlib figures of what a world model predicts, for TensorBoard's Images tab.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot's global
state, so they work headless and in any thread.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

_TRUE, _MEAN, _SAMPLE, _BAND = "black", "tab:blue", "tab:orange", "tab:blue"


def prediction_figure(
    true: np.ndarray,
    mean: np.ndarray,
    samples: np.ndarray | None = None,
    band: tuple[np.ndarray, np.ndarray] | None = None,
    names: list[str] | None = None,
    columns: int = 4,
) -> Figure:
    """One panel per state dimension: truth, mean prediction, sampled futures, uncertainty band.

    true, mean: [T, S] from the same start state (row 0 is that state); samples: [K, T, S]
    futures under different latents; band: (low [T, S], high [T, S]) of the MC-dropout spread;
    names: S labels (default s[i]).
    """
    steps, dims = true.shape
    names = names or [f"s[{i}]" for i in range(dims)]
    columns = min(columns, dims)
    rows = math.ceil(dims / columns)
    figure = Figure(figsize=(3.0 * columns, 2.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    t = np.arange(steps)
    for i, ax in enumerate(axes):
        if i >= dims:
            ax.set_visible(False)
            continue
        if band is not None:
            ax.fill_between(
                t,
                band[0][:, i],
                band[1][:, i],
                color=_BAND,
                alpha=0.2,
                lw=0,
                label="MC-dropout ±2σ",
            )
        if samples is not None:
            for k, sample in enumerate(samples):
                ax.plot(
                    t,
                    sample[:, i],
                    color=_SAMPLE,
                    lw=0.8,
                    alpha=0.6,
                    label="sampled z" if k == 0 else None,
                )
        ax.plot(t, mean[:, i], color=_MEAN, lw=1.5, label="mean (z = 0)")
        ax.plot(t, true[:, i], color=_TRUE, lw=1.5, ls="--", label="true")
        ax.set_title(names[i], fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6, loc="best")
    figure.supxlabel("steps ahead", fontsize=8)
    return figure


def cost_figure(planned: np.ndarray, realised: np.ndarray) -> Figure:
    """Planner's predicted cost vs the cost that happened, per step of an episode ([T] each).

    Left: both over time; right: one against the other, where a calibrated model lies on the
    diagonal.
    """
    figure = Figure(figsize=(8.0, 3.0), layout="constrained")
    over_time, scatter = figure.subplots(1, 2)
    t = np.arange(len(planned))
    over_time.plot(t, realised, color=_TRUE, lw=1.2, label="realised")
    over_time.plot(t, planned, color=_MEAN, lw=1.2, label="predicted")
    over_time.set_xlabel("step")
    over_time.set_ylabel("cost")
    over_time.legend(fontsize=7)
    scatter.scatter(realised, planned, s=6, color=_MEAN, alpha=0.6)
    finite = np.concatenate([planned, realised])
    finite = finite[np.isfinite(finite)]
    if len(finite):
        lo, hi = float(finite.min()), float(finite.max())
        scatter.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls=":")
    scatter.set_xlabel("realised cost")
    scatter.set_ylabel("predicted cost")
    return figure


def outcome_figure(
    samples: np.ndarray,
    real: np.ndarray,
    outcomes: np.ndarray | None = None,
    names: list[str] | None = None,
) -> Figure:
    """One panel per state dim: the histogram of sampled next states from one real (s, a), the
    next state that happened and, where the task knows them, every possible one.

    samples [K, D], real [D], outcomes [M, D]. Modes show as separate peaks on the possible
    outcomes; a model that blurs them shows one peak between.
    """
    dims = samples.shape[1]
    names = names or [f"s[{i}]" for i in range(dims)]
    figure = Figure(figsize=(3.0 * dims, 2.2), layout="constrained")
    for i, ax in enumerate(figure.subplots(1, dims, squeeze=False).ravel()):
        ax.hist(samples[:, i], bins=40, color=_SAMPLE, alpha=0.7, label="sampled z")
        for m, value in enumerate([] if outcomes is None else outcomes[:, i]):
            ax.axvline(value, color="grey", lw=1.0, ls=":", label="possible" if m == 0 else None)
        ax.axvline(real[i], color=_TRUE, lw=1.5, ls="--", label="real")
        ax.set_title(names[i], fontsize=9)
        ax.tick_params(labelsize=7)
    figure.axes[0].legend(fontsize=6, loc="best")
    figure.supxlabel("next state, one step from a held-out state", fontsize=8)
    return figure
