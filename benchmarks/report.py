"""Markdown tables of the benchmark results for the README; merging of a benchmark's CSV parts.

The tables are for the README's Results section; the merge is for a benchmark run as several
processes.

    python -m benchmarks.report                               # every CSV in benchmarks/results/
    python -m benchmarks.report --out results.md              # the same, into a file
    python -m benchmarks.report benchmarks/results/mpc.csv    # chosen CSVs only
    python -m benchmarks.report --merge benchmarks/results/mpc.csv mpc_0.csv mpc_1.csv

A CSV is recognised by its name (`mpc*.csv`, `planner_speed*.csv`, ...) or else by its columns;
one that lacks a column its table needs is skipped with a note. Each table comes after the command
that reproduces it (the first in the benchmark script's docstring) and a line from the CSV's
.meta.json. `--merge OUT PART...` concatenates the parts' rows (union of their columns, in order)
and merges their .meta.json: seeds united, wall seconds summed (process time: parts may have run
side by side), a `parts` count, every other field from the first part.
"""

from __future__ import annotations

import argparse
import ast
import csv
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.csv_parts import merge_csvs, read_meta, wall_seconds

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

    header = ["task", "agent", "return per episode", "mean ± std", "ms/action", "iterations"]
    body = [[env, agent, ", ".join(f"{v:.0f}" for v in numbers(mine, "return")),
             mean_std(numbers(mine, "return")), mean_or_dash(numbers(mine, "ms_per_action")),
             iterations(mine) if agent != "policy" else "—"]
            for (env, agent), mine in group(src.rows, ("env", "agent")).items()]  # fmt: skip
    budgets = " / ".join(sorted({f"{b:g}" for b in numbers(src.rows, "budget_ms")}))
    return f"Planning budget per decision: {budgets} ms; iterations as calibrated per run.\n\n" + (
        table(header, body)
    )


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


# In report order; recognition by columns tries them in this order too, so the planners schema
# (which also has planner, horizon and ms_per_action) comes before planner_speed's.
KINDS = (
    Kind("sample_efficiency", "Sample efficiency vs SAC",
         ("task", "agent", "seed", "env_steps", "eval_return", "threshold"),
         sample_efficiency_table),
    Kind("mpc", "MPC in the model-based loop",
         ("task", "planner", "seed", "env_steps", "eval_return"), mpc_table),
    Kind("planners", "Planners", ("env", "planner", "horizon", "return", "ms_per_action"),
         planners_table),
    Kind("policy_seeding", "mpc+policy vs mpc at equal time",
         ("env", "agent", "budget_ms", "return", "ms_per_action"), policy_seeding_table),
    Kind("planner_speed", "Planner speed", ("planner", "horizon", "ms_per_action"),
         planner_speed_table),
    Kind("model_accuracy", "World model accuracy",
         ("task", "kind", "k", "model_mse", "baseline_mse"), models_table),
    Kind("crash_resume", "Crash and resume", ("attempt", "resumed", "steps_lost", "corrupt_files"),
         crash_resume_table),
)  # fmt: skip


def read(path: Path) -> Source:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    meta = read_meta(path)
    by_name = [k for k in KINDS if re.match(rf"{k.name}([_-]|$)", path.stem)]
    by_columns = [k for k in KINDS if set(k.required) <= set(columns)]
    return Source(path, columns, rows, meta, (by_name or by_columns or [None])[0])


def command(module: str) -> str:
    """The first command in benchmarks/<module>.py's docstring, its comment dropped.

    The docstring is parsed, not imported: the scripts import torch. A script not (yet) there
    gives `python -m benchmarks.<module>`.
    """
    script = Path(__file__).with_name(f"{module}.py")
    doc = ast.get_docstring(ast.parse(script.read_text())) if script.is_file() else None
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in (doc or "").splitlines()]
    commands = [line for line in lines if "python -m benchmarks." in line]
    return commands[0] if commands else f"python -m benchmarks.{module}"


def describe(src: Source) -> str:
    """One line of where and how the CSV was measured, from its .meta.json."""
    m = src.meta
    facts = [m.get("date", "")[:10], f"{m['cpus_available']} CPUs" if "cpus_available" in m else "",
             f"torch threads {m['torch_threads']}" if "torch_threads" in m else "",
             f"seeds {', '.join(map(str, m['seeds']))}" if m.get("seeds") else "",
             f"wall {wall_seconds(m):.0f} s" if "wall_seconds" in m else "",
             f"{m['parts']} processes" if m.get("parts", 1) > 1 else "",
             m.get("note", "")]  # fmt: skip
    line = "; ".join(f for f in facts if f)
    return f"_{line}_" if line else ""


def section(src: Source) -> str:
    name = f"`{src.path}`"
    if src.kind is None:
        return f"{name}: skipped, not a known benchmark CSV (columns: {', '.join(src.columns)})."
    title = f"**{src.kind.title}** ({name})"
    if lacking := missing(src):
        return f"{title}: skipped, missing column(s) {', '.join(lacking)}."
    if not src.rows:
        return f"{title}: skipped, no rows."
    head = f"{title}\n\n```bash\n{command(src.kind.name)}\n```\n\n"
    meta = describe(src)
    return head + (meta + "\n\n" if meta else "") + src.kind.render(src)


def missing(src: Source) -> list[str]:
    """Columns its table needs that the CSV lacks."""
    return [c for c in src.kind.required if c not in src.columns] if src.kind else []


def report(paths: list[Path]) -> str:
    """The Markdown of every CSV in `paths`, by kind in `KINDS` order, then by name."""
    absent = [f"`{p}`: skipped, no such file." for p in paths if not p.is_file()]
    sources = [read(p) for p in sorted(paths) if p.is_file()]
    order = {k.name: i for i, k in enumerate(KINDS)}
    sources.sort(key=lambda s: order[s.kind.name] if s.kind else len(KINDS))
    sac_sources = [s for s in sources if s.kind and s.kind.name == "sample_efficiency"]
    sac_sources = [s for s in sac_sources if not missing(s)]
    mpc_sources = [s for s in sources if s.kind and s.kind.name == "mpc" and not missing(s)]
    for src in sac_sources + mpc_sources:
        # Its own SAC rows first, else those of the first other CSV that has the task.
        for other in [src, *sac_sources] if src in sac_sources else sac_sources:
            for (task, agent), curves in seed_curves(other.rows, "agent").items():
                if agent == SAC:
                    src.sac.setdefault(task, curves)
    parts = absent + [section(s) for s in sources]
    return "\n\n".join(parts) + "\n" if parts else "No CSVs found.\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csvs", nargs="*", type=Path,
                        help="CSVs (default: all in --results); --merge: the parts")  # fmt: skip
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--out", type=Path, default=None, help="write here (default: stdout)")
    parser.add_argument("--merge", type=Path, default=None, metavar="OUT_CSV",
                        help="concatenate the CSVs given into OUT_CSV, no report")  # fmt: skip
    args = parser.parse_args(argv)
    if args.merge:
        if not args.csvs:
            parser.error("--merge needs the part CSVs")
        merge_csvs(args.merge, args.csvs)
        print(f"wrote {args.merge} ({len(args.csvs)} parts)")
        return
    text = report(args.csvs or sorted(args.results.glob("*.csv")))
    if args.out:
        args.out.write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
