"""The tables of the results report: one renderer per benchmark CSV schema, and the helpers
they share (seed curves, steps to threshold, ratio to SAC); `benchmarks.report` picks one."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Row = dict[str, str]
SAC = "sac"  # the agent label of stable-baselines3's SAC in sample_efficiency.csv


@dataclass(frozen=True)
class SeedCurve:
    """One seed's evaluations in a sample-efficiency or MPC CSV."""

    threshold: float | None  #: the task's threshold (None: the task has none)
    reached: int | None  #: env steps of the first evaluation at or above the threshold
    budget: int  #: env steps of the last evaluation
    final: float  #: eval return there


@dataclass
class Source:
    """One CSV and its .meta.json, with the table kind it was recognised as."""

    path: Path
    columns: list[str]
    rows: list[Row]
    meta: dict[str, Any]
    kind: Kind | None = None
    #: task -> SAC's curves for the steps ratio: from this CSV, else another one read with it
    sac: dict[str, list[SeedCurve]] = field(default_factory=dict)


@dataclass(frozen=True)
class Kind:
    """A benchmark CSV schema and how to show it."""

    name: str  #: the default name of the CSV and of the script writing it (benchmarks/NAME.py)
    title: str
    required: tuple[str, ...]  #: columns the table cannot do without
    render: Callable[[Source], str]


def number(text: str | None) -> float | None:
    """A CSV cell as a float; None for empty cells (write_csv writes None as "") and text."""
    try:
        return float(text) if text not in (None, "", "None") else None
    except ValueError:
        return None


def numbers(rows: Iterable[Row], column: str) -> list[float]:
    """The finite values of `column` (SAC's ms/action is NaN: it is not this project's)."""
    values = (number(r.get(column)) for r in rows)
    return [v for v in values if v is not None and math.isfinite(v)]


def group(rows: Iterable[Row], keys: tuple[str, ...]) -> dict[tuple[str, ...], list[Row]]:
    """Rows by the values of `keys`, groups in order of first appearance."""
    out: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        out.setdefault(tuple(row[k] for k in keys), []).append(row)
    return out


def mean_std(values: list[float]) -> str:
    """`mean ± std` over seeds (sample std), the value alone for one seed, — for none."""
    if len(values) < 2:
        return f"{values[0]:.1f}" if values else "—"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def mean_or_dash(values: list[float]) -> str:
    return f"{np.mean(values):.1f}" if values else "—"


def table(header: list[str], body: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *body]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def seed_curves(rows: list[Row], by: str) -> dict[tuple[str, str], list[SeedCurve]]:
    """(task, value of column `by`) -> one curve per seed, in the CSV's order."""
    out: dict[tuple[str, str], list[SeedCurve]] = {}
    for (task, who, _), mine in group(rows, ("task", by, "seed")).items():
        points = sorted(
            (
                (int(step), value, number(r.get("threshold")))
                for r in mine
                if (step := number(r["env_steps"])) is not None
                and (value := number(r["eval_return"])) is not None
            ),
            key=lambda point: point[0],
        )
        if not points:
            continue
        threshold = points[-1][2]
        reached = next((s for s, v, _ in points if threshold is not None and v >= threshold), None)
        curve = SeedCurve(threshold, reached, points[-1][0], points[-1][1])
        out.setdefault((task, who), []).append(curve)
    return out


def steps_to_threshold(curves: list[SeedCurve]) -> tuple[str, str]:
    """(per seed, mean) env steps to the threshold; `>N`: not reached within the budget N."""
    per_seed = ", ".join(f">{c.budget}" if c.reached is None else str(c.reached) for c in curves)
    missed = [c for c in curves if c.reached is None]
    if not missed:
        return per_seed, f"{np.mean([c.reached for c in curves]):.0f}"
    budget = max(c.budget for c in missed)
    return per_seed, f"not reached within {budget} ({len(missed)} of {len(curves)} seeds)"


def sac_ratio(ours: list[SeedCurve], sac: list[SeedCurve]) -> str:
    """Our mean steps to the threshold over SAC's (< 1: fewer steps than SAC).

    A seed that never reached it counts as its budget, a lower bound of its steps: so the ratio
    is a lower bound (≥) when only ours missed, an upper bound (≤) when only SAC's did, and
    unknown (—) when both did.
    """
    if not ours or not sac:
        return "—"
    ours_missed, sac_missed = (any(c.reached is None for c in cs) for cs in (ours, sac))
    if ours_missed and sac_missed:
        return "—"
    steps = lambda cs: float(np.mean([c.budget if c.reached is None else c.reached for c in cs]))  # noqa: E731
    bound = "≥ " if ours_missed else "≤ " if sac_missed else ""
    return f"{bound}{steps(ours) / steps(sac):.2f}"


def sample_efficiency_table(src: Source) -> str:
    gap, ms = "imagined_minus_real" in src.columns, "ms_per_action" in src.columns
    header = "task|agent|steps to threshold per seed|mean steps to threshold|steps / SAC's"
    header += "|final eval return (env steps)"
    header = header.split("|") + ["imagined − real return"] * gap + ["ms/action"] * ms
    by_agent = group(src.rows, ("task", "agent"))
    body = []
    for (task, agent), curves in seed_curves(src.rows, "agent").items():
        per_seed, mean = steps_to_threshold(curves)
        ratio = "" if agent == SAC else sac_ratio(curves, src.sac.get(task, []))
        final = f"{mean_std([c.final for c in curves])} ({max(c.budget for c in curves)})"
        cells = [task, agent, per_seed, mean, ratio, final]
        mine = by_agent[(task, agent)]
        cells += [mean_or_dash(numbers(mine, "imagined_minus_real"))] * gap
        cells += [mean_or_dash(numbers(mine, "ms_per_action"))] * ms
        body.append(cells)
    return (
        "Steps to threshold: the first evaluation at or above the task's threshold; "
        "`>N`: not reached within N env steps. Steps / SAC's < 1: fewer steps than SAC. "
        "Final return: mean ± std over seeds at the last evaluation.\n\n" + table(header, body)
    )


def mpc_table(src: Source) -> str:
    ms = "ms_per_action" in src.columns
    header = "task|planner|budget (env steps)|eval return per seed|mean ± std|threshold reached"
    header += "|steps to threshold per seed|steps / SAC's"
    header = (header + "|ms/action" * ms).split("|")
    by_planner = group(src.rows, ("task", "planner"))
    body = []
    for (task, planner), curves in seed_curves(src.rows, "planner").items():
        threshold = curves[0].threshold
        reached = sum(c.reached is not None for c in curves)
        agent = by_planner[task, planner][0].get("agent") or "mpc"
        label = planner if agent == "mpc" else f"{planner} ({agent})"
        cells = [task, label, str(max(c.budget for c in curves)),
                 ", ".join(f"{c.final:.1f}" for c in curves), mean_std([c.final for c in curves]),
                 "no threshold" if threshold is None
                 else f"{reached}/{len(curves)} seeds (≥ {threshold:g})",
                 steps_to_threshold(curves)[0],
                 sac_ratio(curves, src.sac.get(task, []))]  # fmt: skip
        body.append(
            cells + [mean_or_dash(numbers(by_planner[task, planner], "ms_per_action"))] * ms
        )
    return (
        "Eval return at each seed's last evaluation (the task's budget); threshold reached: seeds "
        "with any evaluation at or above it; steps / SAC's from the sample-efficiency CSV's SAC "
        "rows (< 1: fewer env steps than SAC).\n\n" + table(header, body)
    )


def planners_table(src: Source) -> str:
    settings = ("env", "planner", "horizon", "candidates", "sequences", "iterations")
    keys = tuple(c for c in settings if c in src.columns)
    header = [*keys, "return per seed", "mean ± std", "ms/action"]
    body = [[*key, ", ".join(f"{v:.1f}" for v in numbers(mine, "return")),
             mean_std(numbers(mine, "return")), mean_or_dash(numbers(mine, "ms_per_action"))]
            for key, mine in group(src.rows, keys).items()]  # fmt: skip
    budgets = sorted({f"{b:g}" for b in numbers(src.rows, "budget_ms")})
    note = f"Budget per decision: {' / '.join(budgets)} ms.\n\n" if budgets else ""
    return note + table(header, body)


def policy_seeding_table(src: Source) -> str:
    def iterations(rows: list[Row]) -> str:
        return "/".join(sorted({r["iterations"] for r in rows}, key=int))

    def value(row: Row) -> str:
        # Older CSVs have no terminal_value column: their mpc+policy ended in the critic's value.
        return "off" if row.get("terminal_value") == "False" else "on"

    rows = [r | {"value": value(r)} for r in src.rows]
    header = ["task", "run seed", "budget ms", "critic's value in mpc+policy", "agent",
              "return per episode", "mean ± std", "ms/action", "iterations"]  # fmt: skip
    keys = ("env", "run_seed", "budget_ms", "value", "agent")
    body = [[env, run_seed, f"{float(budget):g}", on, agent,
             ", ".join(f"{v:.0f}" for v in numbers(mine, "return")),
             mean_std(numbers(mine, "return")), mean_or_dash(numbers(mine, "ms_per_action")),
             iterations(mine) if agent != "policy" else "—"]
            for (env, run_seed, budget, on, agent), mine in group(rows, keys).items()]  # fmt: skip
    note = "Planning budget per decision in ms; iterations as calibrated per run and budget."
    return f"{note}\n\n{table(header, body)}"


def exploitation_table(src: Source) -> str:
    header = ["task", "λ_u", "policy updates", "imagined − real per seed", "mean", "eval return"]
    keys = ("env", "uncertainty_weight", "updates")
    body = [[*key, ", ".join(f"{v:+.1f}" for v in numbers(mine, "imagined_minus_real")),
             mean_std(numbers(mine, "imagined_minus_real")), mean_std(numbers(mine, "eval_return"))]
            for key, mine in group(src.rows, keys).items()]  # fmt: skip
    note = "Imagined minus real return over the policy's horizon (> 0: the model flatters it)."
    return f"{note}\n\n{table(header, body)}"


def planner_speed_table(src: Source) -> str:
    devices = {r.get("device", "") for r in src.rows}
    ms: dict[str, dict[str, list[float]]] = {}  # planner -> column -> ms/action
    for r in src.rows:
        # The device in the column only where the CSV mixes devices.
        column = f"horizon {r['horizon']}" + (f" ({r['device']})" if len(devices) > 1 else "")
        ms.setdefault(r["planner"], {}).setdefault(column, []).extend(numbers([r], "ms_per_action"))
    columns = sorted({c for by in ms.values() for c in by}, key=lambda c: number(c.split()[1]) or 0)
    threads = sorted({r["threads"] for r in src.rows if r.get("threads")})
    note = ", ".join(sorted(devices - {""})) + "".join(f", torch threads {t}" for t in threads)
    note = f"Milliseconds per MPC decision ({note or 'device not recorded'})."
    body = [
        [planner, *(mean_or_dash(by.get(c, [])) for c in columns)] for planner, by in ms.items()
    ]
    return note + "\n\n" + table(["planner", *columns], body)


def models_table(src: Source) -> str:
    titles = {"latent_spread": "spread over z", "dropout_spread": "spread over dropout",
              "train_seconds": "train s"}  # fmt: skip
    optional = [(c, title) for c, title in titles.items() if c in src.columns]
    header = ["task", "kind", "k", "model MSE", "baseline MSE", "model / baseline"]
    header += [title for _, title in optional]
    body = []
    for r in src.rows:
        model, baseline = number(r["model_mse"]), number(r["baseline_mse"])
        ratio = model / baseline if model is not None and baseline else None
        cells = [r["task"], r["kind"], r["k"]]
        cells += [f"{v:.3g}" if v is not None else "—" for v in (model, baseline, ratio)]
        cells += [f"{v:.3g}" if (v := number(r[c])) is not None else "—" for c, _ in optional]
        body.append(cells)
    note = "k-step error in state-normalised units, z from the prior"
    if {"latent_spread", "dropout_spread"} & set(src.columns):
        note += "; spreads: variance of the k-step prediction over 8 draws, in the same units"
    return f"{note}.\n\n{table(header, body)}"


def crash_resume_table(src: Source) -> str:
    lost = numbers(src.rows, "steps_lost")
    header = "kills|kills of a resume|corrupt files|steps lost per crash (mean)|max".split("|")
    body = [str(len(src.rows)), str(sum(r["resumed"] == "True" for r in src.rows)),
            f"{sum(numbers(src.rows, 'corrupt_files')):.0f}", mean_or_dash(lost),
            f"{max(lost):.0f}" if lost else "—"]  # fmt: skip
    if "resumes_ok" in src.meta and "resumes_started" in src.meta:
        header.append("resumes that worked")
        body.append(f"{src.meta['resumes_ok']}/{src.meta['resumes_started']}")
    return table(header, [body])
