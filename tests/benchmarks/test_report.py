"""The results report (`python -m benchmarks.report`) on small synthetic CSVs, and `--merge`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from benchmarks.report import main, report
from benchmarks.tables import sac_ratio, seed_curves, steps_to_threshold


def write(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if meta is not None:
        path.with_suffix(".meta.json").write_text(json.dumps(meta))
    return path


def curve(agent: str, seed: int, returns: list[float], every: int = 200) -> list[dict[str, Any]]:
    """Sample-efficiency rows of one run: an evaluation every `every` env steps."""
    return [
        {"task": "Pendulum-v1", "agent": agent, "seed": seed, "env_steps": every * (i + 1),
         "eval_return": value, "threshold": -200.0, "steps_to_threshold": "",
         "imagined_minus_real": 10.0 * seed if agent.startswith("policy") else "",
         "ms_per_action": "nan" if agent == "sac" else 50.0}
        for i, value in enumerate(returns)
    ]  # fmt: skip


def efficiency_rows() -> list[dict[str, Any]]:
    return (
        curve("mpc", 0, [-900, -150, -120, -100])  # reached at 400
        + curve("mpc", 1, [-900, -400, -190, -300])  # reached at 600 (and lost again)
        + curve("policy", 0, [-900, -150, -120, -100])  # reached at 400
        + curve("policy", 1, [-900, -800, -700, -600])  # not within its budget of 800
        + curve("sac", 0, [-900, -199], every=500)  # reached at 1000
        + curve("sac", 1, [-900, -800, -700, -600, -500, -100], every=500)  # reached at 3000
    )


def test_steps_to_threshold_per_seed_and_not_reached() -> None:
    rows = [{k: str(v) for k, v in r.items()} for r in efficiency_rows()]
    curves = seed_curves(rows, "agent")
    assert steps_to_threshold(curves["Pendulum-v1", "mpc"]) == ("400, 600", "500")
    assert [c.final for c in curves["Pendulum-v1", "mpc"]] == [-100, -300]
    assert steps_to_threshold(curves["Pendulum-v1", "policy"]) == (
        "400, >800",
        "not reached within 800 (1 of 2 seeds)",
    )
    sac = curves["Pendulum-v1", "sac"]
    assert [c.reached for c in sac] == [1000, 3000]
    assert [c.budget for c in sac] == [1000, 3000]


def test_sac_ratio_and_its_bounds() -> None:
    rows = [{k: str(v) for k, v in r.items()} for r in efficiency_rows()]
    curves = seed_curves(rows, "agent")
    sac = curves["Pendulum-v1", "sac"]
    assert sac_ratio(curves["Pendulum-v1", "mpc"], sac) == "0.25"  # 500 / 2000
    # The missed seed counts as its budget (800): at least (400 + 800) / 2 / 2000.
    assert sac_ratio(curves["Pendulum-v1", "policy"], sac) == "≥ 0.30"
    assert sac_ratio(sac, curves["Pendulum-v1", "policy"]) == "≤ 3.33"
    assert sac_ratio(curves["Pendulum-v1", "policy"], curves["Pendulum-v1", "policy"]) == "—"
    assert sac_ratio(curves["Pendulum-v1", "mpc"], []) == "—"


def test_report_tables(tmp_path: Path) -> None:
    meta = {"date": "2026-11-27 04:00:00", "seeds": [0, 1], "wall_seconds": 12.0}
    efficiency = write(tmp_path / "sample_efficiency.csv", efficiency_rows(), meta)
    # A later policy run in its own file, without SAC: the ratio takes SAC from the other CSV.
    lu0 = write(tmp_path / "sample_efficiency_lu0.csv", curve("policy-lu0", 0, [-900, -100]))
    text = report([lu0, efficiency])
    assert text.index("sample_efficiency.csv") < text.index("sample_efficiency_lu0.csv")
    assert "python -m benchmarks.sample_efficiency\n" in text  # the docstring's command
    assert "_2026-11-27; seeds 0, 1; wall 12 s_" in text
    assert "| Pendulum-v1 | mpc | 400, 600 | 500 | 0.25 | -200.0 ± 141.4 (800) | — | 50.0 |" in text
    policy = "| policy | 400, >800 | not reached within 800 (1 of 2 seeds) | ≥ 0.30 |"
    assert f"| Pendulum-v1 {policy}" in text
    assert "| -350.0 ± 353.6 (800) | 5.0 | 50.0 |" in text  # imagined - real: mean of 0 and 10
    assert "| Pendulum-v1 | sac | 1000, 3000 | 2000 |  | -149.5 ± 70.0 (3000) | — | — |" in text
    assert "| Pendulum-v1 | policy-lu0 | 400 | 400 | 0.20 | -100.0 (400) | 0.0 | 50.0 |" in text


def test_report_other_tables_and_missing_columns(tmp_path: Path) -> None:
    mpc = write(tmp_path / "mpc.csv", [
        {"task": "Pendulum-v1", "planner": "cem", "seed": s, "env_steps": 2000,
         "eval_return": r, "threshold": -200.0, "reached": r >= -200, "ms_per_action": 70.0}
        for s, r in ((0, -150.0), (1, -250.0))
    ])  # fmt: skip
    planners = write(tmp_path / "planners.csv", [
        {"env": "Pendulum-v1", "planner": "mppi", "horizon": 30, "candidates": 256,
         "sequences": 200, "iterations": 3, "seed": s, "return": -150.0 - s,
         "ms_per_action": 80.0, "budget_ms": 100}
        for s in (0, 1)
    ])  # fmt: skip
    accuracy = write(tmp_path / "model_accuracy.csv", [
        {"task": "Pendulum-v1", "kind": "cvae", "seed": 0, "env_steps": 600, "k": 10,
         "model_mse": 0.5, "baseline_mse": 2.0, "ratio": 0.25, "latent_spread": 0.125,
         "dropout_spread": 0.0}
    ])  # fmt: skip
    sac = write(tmp_path / "sample_efficiency.csv", [
        {"task": "Pendulum-v1", "agent": "sac", "seed": 0, "env_steps": step,
         "eval_return": value, "threshold": -200.0}
        for step, value in ((2000, -900.0), (4000, -150.0))
    ])  # fmt: skip
    broken = write(tmp_path / "mpc_broken.csv", [{"task": "Pendulum-v1", "planner": "cem"}])
    other = write(tmp_path / "notes.csv", [{"what": "else"}])
    out = tmp_path / "report.md"
    main([str(p) for p in (mpc, planners, accuracy, sac, broken, other)] + ["--out", str(out)])
    text = out.read_text()
    cem = "| cem | 2000 | -150.0, -250.0 | -200.0 ± 70.7 | 1/2 seeds (≥ -200) | 2000, >2000 "
    cem += "| ≥ 0.50 | 70.0 |"  # one seed missed: its budget bounds the ratio from below
    assert f"| Pendulum-v1 {cem}" in text
    assert "Budget per decision: 100 ms." in text
    assert "| mppi | 30 | 256 | 200 | 3 | -150.0, -151.0 | -150.5 ± 0.7 | 80.0 |" in text
    assert "| Pendulum-v1 | cvae | 10 | 0.5 | 2 | 0.25 | 0.125 | 0 |" in text
    assert "skipped, missing column(s) seed, env_steps, eval_return." in text
    assert "notes.csv`: skipped, not a known benchmark CSV" in text
    assert report([]) == "No CSVs found.\n"


def test_merge_two_parts(tmp_path: Path) -> None:
    first = write(tmp_path / "a.csv", [{"task": "Pendulum-v1", "seed": 0, "eval_return": -1}],
                  {"date": "first", "seeds": [0], "wall_seconds": 10.0, "note": "n"})  # fmt: skip
    second = write(tmp_path / "b.csv",
                   [{"task": "Reacher-v5", "seed": 2, "eval_return": -2, "extra": "x"},
                    {"task": "Reacher-v5", "seed": 1, "eval_return": -3, "extra": "y"}],
                   {"date": "second", "seeds": [2, 1], "wall_seconds": [1.5, 2.0]})  # fmt: skip
    out = tmp_path / "merged" / "all.csv"
    main(["--merge", str(out), str(first), str(second)])
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["task", "seed", "eval_return", "extra"]
    assert [(r["seed"], r["extra"]) for r in rows] == [("0", ""), ("2", "x"), ("1", "y")]
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta == {"date": "first", "seeds": [0, 1, 2], "wall_seconds": 13.5, "note": "n",
                    "parts": 2}  # fmt: skip
    # Merging a merge counts its parts.
    main(["--merge", str(tmp_path / "more.csv"), str(out), str(first)])
    assert json.loads((tmp_path / "more.meta.json").read_text())["parts"] == 3
