"""`python -m benchmarks.fuzz_inputs` at a tiny size: it runs, writes its CSV and meta, and its
counts add up (the full run's figures are in benchmarks/results/fuzz_inputs.csv)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.fuzz_inputs import CLASSES


@pytest.mark.slow
def test_fuzz_inputs_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.csv"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.fuzz_inputs", "--cases", str(2 * len(CLASSES)),
         "--seed", "3", "--out", str(out)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with out.open() as f:
        rows = {row["class"]: row for row in csv.DictReader(f)}
    assert set(rows) == {*CLASSES, "total"}
    total = rows.pop("total")
    for name in ("cases", "exit_0", "exit_1", "exit_2", "tracebacks", "files_changed"):
        assert int(total[name]) == sum(int(r[name]) for r in rows.values()), name
    assert int(total["cases"]) >= 2 * len(CLASSES) - 2  # hypothesis may stop a class early
    statuses = ("exit_0", "exit_1", "exit_2", "exit_other", "timeouts")
    assert int(total["cases"]) == sum(int(total[k]) for k in statuses)
    for name in ("tracebacks", "not_one_line", "files_changed", "broken_checkpoints"):
        assert total[name] == "0", (name, total)
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["seeds"] == [3] and {"torch", "wall_seconds"} <= set(meta)
