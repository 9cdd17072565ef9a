"""Tiny runs of every benchmark script, so the scripts never rot (the full runs are manual)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.configurator.config import TrainConfig
from benchmarks.common import field_overrides

TINY_MPC = ["loop.seed_steps=100", "loop.first_train_steps=10", "loop.train_steps=5",
            "loop.eval_episodes=1", "model.hidden=16", "train.batch_size=16", "train.eval_every=5",
            "planner.horizon=3", "planner.iterations=1", "planner.population=8", "planner.elites=2",
            "video=false"]  # fmt: skip


def run(module: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, check=False,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def read(path: Path) -> list[dict]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    meta = json.loads(path.with_suffix(".meta.json").read_text())
    assert {"torch", "seeds", "wall_seconds", "cpus_available"} <= set(meta)
    return rows


@pytest.mark.slow
def test_model_accuracy_smoke(tmp_path: Path) -> None:
    out = tmp_path / "acc.csv"
    run("benchmarks.model_accuracy", "--tasks", "Pendulum-v1", "--steps", "600",
        "--max-steps", "5", "--threads", "1", "--out", str(out))  # fmt: skip
    rows = read(out)
    assert {r["kind"] for r in rows} == {"cvae", "deterministic"}
    assert {r["k"] for r in rows} == {"1", "5", "10", "25"}
    for r in rows:
        # The deterministic model has no z, so its predictions do not spread over z-samples.
        latent, dropout = float(r["latent_spread"]), float(r["dropout_spread"])
        assert (latent == 0) if r["kind"] == "deterministic" else (latent > 0)
        # One prediction has a zero-width interval, which no real outcome falls in.
        coverage = float(r["coverage"])
        assert (coverage == 0) if r["kind"] == "deterministic" else (0 <= coverage <= 1)
        assert float(r["energy"]) > 0
        assert dropout > 0  # default dropout 0.05: masks differ
    assert out.with_suffix(".png").is_file()


@pytest.mark.slow
def test_planner_speed_smoke(tmp_path: Path) -> None:
    out = tmp_path / "speed.csv"
    run("benchmarks.planner_speed", "--horizons", "3", "--decisions", "1", "--threads", "1",
        "--envs", "1", "3", "--reference", "--out", str(out))  # fmt: skip
    rows = read(out)
    assert {r["planner"] for r in rows} == {"gradient", "cem", "mppi", "hybrid", "reference"}
    assert sorted(int(r["envs"]) for r in rows) == [1] * 5 + [3] * 5
    quality = {(r["planner"], r["envs"]): float(r["planned_cost"]) for r in rows}
    for envs in ("1", "3"):  # a search 16x longer plans no worse than the default one
        assert quality["reference", envs] <= quality["gradient", envs] + 1e-6
    assert all(r["cuda_graphs"] == "False" for r in rows)  # CPU: nothing is recorded
    for r in rows:
        assert float(r["ms_per_env"]) == pytest.approx(
            float(r["ms_per_action"]) / int(r["envs"]), abs=0.01
        )


def test_planner_speed_settings_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "speed.csv"
    run("benchmarks.planner_speed", "--kinds", "gradient", "--horizons", "3", "--decisions", "1",
        "--threads", "1", "--settings", "iterations=1", "iterations=4",
        "--rounds", "2", "--out", str(out))  # fmt: skip
    rows = read(out)
    assert [r["settings"] for r in rows] == ["iterations=1", "iterations=4"] * 2
    short, long = (float(r["planned_cost"]) for r in rows[:2])
    # The same start and Adam run, longer: its best iterate can only be as good or better.
    assert long <= short + 1e-6


@pytest.mark.parametrize("setting", ["bogus=1", "iterations=x", "iterations=0"])
def test_planner_speed_bad_setting_is_one_line(setting: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.planner_speed", "--settings", setting],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--settings:" in result.stderr


@pytest.mark.slow
def test_mpc_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "mpc.csv"
    run("benchmarks.mpc", "--tasks", "Pendulum-v1", "--planners", "gradient", "cem",
        "--seeds", "0", "--steps", "150", "--threads", "1", "--out", str(out),
        "--set", *TINY_MPC)  # fmt: skip
    rows = read(out)
    assert {r["planner"] for r in rows} == {"gradient", "cem"}
    assert all(int(r["env_steps"]) == 150 for r in rows)


@pytest.mark.slow
def test_policy_speed_smoke() -> None:
    assert "us/action" in run("benchmarks.policy_speed", "--calls", "10")


@pytest.mark.slow
def test_simulator_speed_smoke() -> None:
    assert "transitions/s" in run("benchmarks.simulator_speed", "--envs", "4", "--steps", "2",
                                  "--threads", "1")  # fmt: skip


@pytest.mark.slow
def test_sample_efficiency_smoke(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    out, runs = tmp_path / "eff.csv", tmp_path / "runs"
    run("benchmarks.sample_efficiency", "--tasks", "Pendulum-v1", "--agents", "mpc", "sac",
        "--seeds", "0", "--steps", "150", "--threads", "1", "--out", str(out),
        "--runs-dir", str(runs), "--set", *TINY_MPC)  # fmt: skip
    rows = read(out)
    assert {r["agent"] for r in rows} == {"mpc", "sac"}
    assert out.with_suffix(".png").is_file()
    kept = tmp_path / "kept.csv"
    run("benchmarks.sample_efficiency", "--from-runs", *map(str, runs.iterdir()),
        "--out", str(kept))  # fmt: skip
    assert read(kept) == [r for r in rows if r["agent"] == "mpc"]
    replot = tmp_path / "replot.csv"
    run("benchmarks.sample_efficiency", "--plot", str(out), "--out", str(replot))
    assert replot.with_suffix(".png").is_file()


@pytest.mark.slow
def test_policy_seeding_smoke(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    tiny = [f"--{pair}" for pair in TINY_MPC if not pair.startswith("video")]
    run("agents.app.cli", "run", "--agent", "policy", "--steps", "150", "--runs_dir", str(runs),
        "--threads", "1", "--no-progress", "--no-video", "--policy.updates", "2",
        "--policy.horizon", "3", *tiny)  # fmt: skip
    out = tmp_path / "seeding.csv"
    (run_dir,) = runs.iterdir()
    run("benchmarks.policy_seeding", "--run-dirs", str(run_dir), "--seeds", "0",
        "--episode-steps", "5", "--budget-ms", "5", "--max-iterations", "2", "--threads", "1",
        "--out", str(out))  # fmt: skip
    rows = read(out)
    assert [r["agent"] for r in rows] == ["mpc", "mpc+policy", "policy"]
    assert all(float(r["ms_per_action"]) > 0 for r in rows)


@pytest.mark.slow
def test_exploitation_smoke(tmp_path: Path) -> None:
    out = tmp_path / "exploitation.csv"
    run("benchmarks.exploitation", "--seeds", "0", "--data-steps", "400", "--rounds", "2",
        "--episodes", "1", "--threads", "1", "--out", str(out), "--set", "policy.updates=2",
        "train.max_steps=5", "train.eval_every=5", "model.hidden=16")  # fmt: skip
    rows = read(out)
    assert [(r["uncertainty_weight"], r["updates"]) for r in rows] == [
        ("10.0", "2"),
        ("10.0", "4"),
        ("0.0", "2"),
        ("0.0", "4"),
    ]


@pytest.mark.slow
def test_stochastic_futures_smoke(tmp_path: Path) -> None:
    out = tmp_path / "sf.csv"
    run("benchmarks.stochastic_futures", "--tasks", "GustyLedge-v0", "--steps", "600",
        "--max-steps", "5", "--kinds", "deterministic", "cvae", "--threads", "1",
        "--train", "lr_final=1.0", "--out", str(out))  # fmt: skip
    rows = read(out)
    assert json.loads(out.with_suffix(".meta.json").read_text())["train"] == ["lr_final=1.0"]
    assert {(r["kind"], r["k"]) for r in rows} == {
        (kind, k) for kind in ("deterministic", "cvae") for k in ("1", "10", "25")
    }
    for r in rows:
        # Identical samples have a zero-width interval; one-step shares are fractions.
        coverage = float(r["coverage"])
        assert (coverage == 0) if r["kind"] == "deterministic" else (0 <= coverage <= 1)
        if r["k"] == "1":
            assert 0 <= float(r["at_mode"]) + float(r["at_mean"]) <= 1 + 1e-6


@pytest.mark.slow
def test_epistemic_smoke(tmp_path: Path) -> None:
    out = tmp_path / "ep.csv"
    run("benchmarks.epistemic", "--tasks", "Pendulum-v1", "--seeds", "0", "--steps", "600",
        "--max-steps", "5", "--threads", "1", "--out", str(out))  # fmt: skip
    rows = read(out)
    assert {(r["kind"], r["k"]) for r in rows} == {
        (kind, k) for kind in ("cvae", "ensemble") for k in ("1", "10")
    }
    for r in rows:
        assert -1 <= float(r["spearman"]) <= 1 and 0 <= float(r["auroc"]) <= 1
        assert float(r["ratio"]) > 0


def test_field_overrides_type_each_value_by_its_field_and_name_the_flag_when_bad() -> None:
    got = field_overrides(TrainConfig(), ["lr_final=0.5", "max_steps=7"], "--train")
    assert (got.lr_final, got.max_steps) == (0.5, 7)
    with pytest.raises(SystemExit, match=r"^--train lr_finall=0.5: "):
        field_overrides(TrainConfig(), ["lr_finall=0.5"], "--train")
    with pytest.raises(SystemExit, match=r"^--train lr_final=2: "):
        field_overrides(TrainConfig(), ["lr_final=2"], "--train")
