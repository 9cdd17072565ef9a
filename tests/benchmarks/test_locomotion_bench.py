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


def test_plot_draws_several_csvs_together_and_runs_nothing(tmp_path: Path, monkeypatch) -> None:
    import sys

    import benchmarks.locomotion as loco

    header = "task,agent,seed,budget,env_steps,eval_return,run_seconds\n"
    ours, sac = tmp_path / "ours.csv", tmp_path / "sac.csv"
    ours.write_text(header + "Ant-v5,ours,0,200,200,1.5,9.0\n")
    sac.write_text(header + "Ant-v5,sac,0,200,200,2.5,3.0\nSwimmer-v5,sac,1,200,200,-1.0,3.0\n")
    drawn: list[tuple[list[dict], Path]] = []
    monkeypatch.setattr(loco, "plot", lambda rows, path: drawn.append((rows, path)))
    monkeypatch.setattr(loco, "ours", lambda *a: pytest.fail("ran our agent"))
    monkeypatch.setattr(loco, "sac_curve", lambda *a: pytest.fail("ran SAC"))
    out = tmp_path / "both.csv"
    argv = ["locomotion", "--plot", str(ours), str(sac), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    loco.main()
    ((rows, path),) = drawn
    assert path == out.with_suffix(".png") and not out.exists()
    assert [(r["task"], r["agent"]) for r in rows] == [
        ("Ant-v5", "ours"),
        ("Ant-v5", "sac"),
        ("Swimmer-v5", "sac"),
    ]
    monkeypatch.setattr(sys, "argv", ["locomotion", "--plot", str(tmp_path / "none.csv")])
    with pytest.raises(SystemExit) as exit_:
        loco.main()
    assert exit_.value.code == 2


def test_plot_lays_many_tasks_out_in_rows(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks.locomotion import plot

    rows = [{"task": f"Task{i}-v0", "agent": "sac", "env_steps": str(s), "eval_return": str(i * s)}
            for i in range(5) for s in (100, 200)]  # fmt: skip
    plot(rows, tmp_path / "plot.png")
    import matplotlib.image

    height, width = matplotlib.image.imread(tmp_path / "plot.png").shape[:2]
    assert (width, height) == (2000, 700)  # 4 columns of 5 x 3.5 inches, 2 rows, at 100 dpi
