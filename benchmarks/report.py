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
import re
from pathlib import Path

from benchmarks.csv_parts import merge_csvs, read_meta, wall_seconds
from benchmarks.tables import (
    SAC,
    Kind,
    Source,
    crash_resume_table,
    exploitation_table,
    models_table,
    mpc_table,
    planner_speed_table,
    planners_table,
    policy_seeding_table,
    sample_efficiency_table,
    seed_curves,
)

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
    Kind("exploitation", "Model exploitation with and without the uncertainty penalty",
         ("env", "uncertainty_weight", "updates", "imagined_minus_real"), exploitation_table),
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
