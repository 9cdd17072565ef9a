import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.cli import main
from agents.run_folder import CHECKPOINT_FILE, DATA_FILE, load_world_model
from agents.training import eval_model

TINY = [
    "--steps",
    "600",
    "--train.max_steps",
    "30",
    "--train.eval_every",
    "10",
    "--model.hidden",
    "32",
    "--train.batch_size",
    "32",
    "--no-progress",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    assert (
        main(["train", "--env", "Pendulum-v1", "--seed", "1", "--runs_dir", str(runs), *TINY]) == 0
    )
    (run,) = runs.iterdir()
    return run


def test_train_writes_a_run_folder_with_data_config_checkpoint(run_dir: Path) -> None:
    assert run_dir.name.startswith("Pendulum-v1__train__1__")
    for name in ("config.json", DATA_FILE, CHECKPOINT_FILE):
        assert (run_dir / name).is_file(), name


def test_events_file_reads_back_with_tensorboard_and_has_the_expected_tags(run_dir: Path) -> None:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/reconstruction",
        "train/kl",
        "val/loss",
        "charts/learning_rate",
        "charts/samples_per_s",
    }
    expected |= {f"val/k_step_mse_{k}" for k in (1, 5, 10, 25)}
    assert expected <= tags, expected - tags
    assert len(acc.Scalars("val/loss")) == 3


def test_save_then_load_gives_identical_predictions(run_dir: Path) -> None:
    first = load_world_model(run_dir).model
    second = load_world_model(run_dir).model
    s0, actions = torch.randn(8, 3), torch.rand(12, 8, 1) * 2 - 1
    z = first.sample_prior(12, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        first.rollout(s0, actions, z), second.rollout(s0, actions, z), rtol=0, atol=0
    )
    assert first.state_dict().keys() == second.state_dict().keys()
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


def test_eval_model_reports_every_k_and_beats_nothing_silently(run_dir: Path, capsys) -> None:
    errors = eval_model(run_dir, device="cpu")
    assert [e.k for e in errors] == [1, 5, 10, 25]
    assert all(e.model >= 0 and e.baseline > 0 for e in errors)
    assert "baseline" in capsys.readouterr().out


def test_unknown_env_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents.cli",
            "train",
            "--env",
            "Nope-v0",
            "--runs_dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Nope-v0" in lines[0] and "Pendulum-v1" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists(), "nothing may be written on bad input"


def test_bad_value_is_exit_2_without_traceback(capsys, tmp_path: Path) -> None:
    assert main(["train", "--train.lr", "-1", "--runs_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "lr must be positive" in err and "Traceback" not in err
