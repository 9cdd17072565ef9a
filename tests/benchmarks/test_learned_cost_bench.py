"""A tiny run of benchmarks/learned_cost.py: both costs, rows written per run, --resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_smoke import TINY_MPC, read, run


@pytest.mark.slow
def test_learned_cost_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "learned_cost.csv"
    args = ["--tasks", "Pendulum-v1", "--seeds", "0", "--steps", "300", "--threads", "1",
            "--out", str(out), "--set", *TINY_MPC, "cost_model.hidden=16"]  # fmt: skip
    stdout = run("benchmarks.learned_cost", *args)
    rows = read(out)
    assert {r["cost"] for r in rows} == {"exact", "learned"}
    assert {r["env_steps"] for r in rows} == {"300"} and {r["budget"] for r in rows} == {"300"}
    assert "learned/exact steps" in stdout and out.with_suffix(".png").is_file()
    again = run("benchmarks.learned_cost", *args, "--resume")
    assert again.count("skipped") == 2 and read(out) == rows
