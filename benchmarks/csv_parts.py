"""Results CSVs made of parts: a benchmark run as several processes writes one CSV each, merged
here with their .meta.json files (no torch import, so the report stays quick)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def read_meta(csv_path: Path) -> dict[str, Any]:
    """The .meta.json beside a results CSV ({} when there is none)."""
    meta_path = csv_path.with_suffix(".meta.json")
    return json.loads(meta_path.read_text()) if meta_path.is_file() else {}


def wall_seconds(meta: dict[str, Any]) -> float:
    """A meta's wall seconds; a list (one per process, as merged by hand) counts as its sum."""
    value = meta.get("wall_seconds", 0.0)
    return float(sum(value) if isinstance(value, list) else value)


def merge_csvs(out: Path, parts: list[Path]) -> None:
    """Rows of `parts` into `out` (union of columns), their .meta.json into `out`'s: seeds
    united, wall seconds summed (process time: parts may have run side by side), a `parts` count,
    every other field from the first part."""
    columns: dict[str, None] = {}
    rows: list[dict[str, str]] = []
    metas = [read_meta(part) for part in parts]
    for part in parts:
        with part.open(newline="") as f:
            reader = csv.DictReader(f)
            rows += list(reader)
            columns.update(dict.fromkeys(reader.fieldnames or []))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
        writer.writeheader()
        writer.writerows(rows)
    present = [m for m in metas if m]
    if present:
        merged = present[0] | {
            "seeds": sorted(set().union(*(m.get("seeds", []) for m in present))),
            "wall_seconds": round(sum(wall_seconds(m) for m in present), 1),
            # A part that is itself a merge counts as its parts.
            "parts": sum(m.get("parts", 1) for m in metas),
        }
        out.with_suffix(".meta.json").write_text(json.dumps(merged, indent=2) + "\n")
