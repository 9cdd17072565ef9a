"""A tiny run of benchmarks/locomotion.py: rows per run, kept run folders resumed, --resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_smoke import TINY_MPC, read, run

TINY = ["--tasks", "Hopper-v5", "--seeds", "0", "--steps", "300", "--threads", "1", "--set",
        *TINY_MPC, "loop.update_every=50", "loop.model_updates=2"]  # fmt: skip


@pytest.mark.slow
def test_locomotion_benchmark_resumes_kept_runs_and_skips_measured_ones(tmp_path: Path) -> None:
    out, runs = tmp_path / "locomotion.csv", tmp_path / "runs"
    args = [*TINY, "--agents", "ours", "--out", str(out), "--runs-dir", str(runs)]
    run("benchmarks.locomotion", *args)
    rows = read(out)
    assert rows and {r["budget"] for r in rows} == {"300"} and rows[-1]["env_steps"] == "300"
    assert out.with_suffix(".png").is_file()
    (run_dir,) = runs.iterdir()
    assert (run_dir / "checkpoint.safetensors").is_file()
    assert run("benchmarks.locomotion", *args, "--resume").count("skipped") == 1
    out.unlink()  # the rows lost, the run folder kept: the run is read back, not run again
    again = run("benchmarks.locomotion", *args, "--resume")
    assert "already complete" in again and len(list(runs.iterdir())) == 1
    assert [r["eval_return"] for r in read(out)] == [r["eval_return"] for r in rows]


@pytest.mark.slow
def test_locomotion_benchmark_runs_sac_on_the_same_evaluation(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    out = tmp_path / "locomotion.csv"
    run("benchmarks.locomotion", *TINY, "--agents", "sac", "--out", str(out))
    (row,) = read(out)
    assert (row["agent"], row["env_steps"]) == ("sac", "300") and float(row["run_seconds"]) > 0


def test_published_returns_are_matched_by_the_tasks_name() -> None:
    from benchmarks.locomotion import ANCHORS, anchor_name

    names = {anchor_name(t) for t in ("HalfCheetah-v5", "dm_control/cheetah-run-v0")}
    assert names == {"HalfCheetah", "cheetah-run"}
    assert names <= {line.split(",")[1] for line in ANCHORS.read_text().splitlines()}


def test_a_kept_run_of_a_namespaced_id_is_found_and_resumed(tmp_path: Path, monkeypatch) -> None:
    # 'dm_control/cheetah-run-v0' is spelled 'dm_control-cheetah-run-v0' in run folder names.
    import types

    import benchmarks.locomotion as loco

    kept = tmp_path / "dm_control-cheetah-run-v0__locomotion-300__0__20260101-000000"
    kept.mkdir()
    resumed: list[Path] = []
    monkeypatch.setattr(
        loco, "make_config", lambda *a, **k: types.SimpleNamespace(name="locomotion-300")
    )
    monkeypatch.setattr(loco, "resume", lambda path: resumed.append(path) or path)
    monkeypatch.setattr(loco, "run", lambda config: pytest.fail("started a new run"))
    monkeypatch.setattr(loco, "run_curve", lambda path: ([(300, 1.0)], None, None))
    assert loco.ours("dm_control/cheetah-run-v0", 0, 300, {}, tmp_path)[0][:2] == (300, 1.0)
    assert resumed == [kept]
