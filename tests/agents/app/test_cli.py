import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.app.cli import main
from agents.app.runs.folder import CHECKPOINT_FILE, DATA_FILE, load_world_model, save_world_model
from agents.app.train import eval_model
from agents.configurator import PRESETS, build_model
from agents.configurator.config import Config
from envs import make_task
from worldmodel.data.store import EpisodeStore, Stats
from worldmodel.forward.fit import split_episodes

TINY = [
    "--steps",
    "600",
    "--train.max-steps",
    "30",
    "--train.eval-every",
    "10",
    "--model.hidden",
    "32",
    "--train.batch-size",
    "32",
    "--no-progress",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    assert (
        main(["train", "--env", "Pendulum-v1", "--seed", "1", "--runs-dir", str(runs), *TINY]) == 0
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
    expected |= {f"val/k_step_mse_{k}{kind}" for k in (1, 5, 10, 25) for kind in ("", "_mean")}
    assert expected <= tags, expected - tags
    assert len(acc.Scalars("val/loss")) == 3


def test_save_then_load_gives_identical_predictions(tmp_path: Path) -> None:
    """The model a checkpoint is loaded into predicts exactly what the saved model did."""
    config = Config()
    task = make_task(config.env)
    torch.manual_seed(3)
    saved = build_model(config.model, task.obs_dim, task.act_dim)
    g = torch.Generator().manual_seed(0)
    saved.set_normalization(Stats(*(torch.rand(task.obs_dim, generator=g) + 0.5 for _ in range(4))))
    save_world_model(tmp_path / CHECKPOINT_FILE, config, task, saved.eval())
    loaded = load_world_model(tmp_path).model
    s0, actions = torch.randn(8, 3, generator=g), torch.rand(12, 8, 1, generator=g) * 2 - 1
    z = saved.sample_prior(12, 8, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.rollout(s0, actions, z), saved.rollout(s0, actions, z), rtol=0, atol=0
        )


def test_eval_model_reports_the_k_step_error_of_the_runs_model(run_dir: Path, capsys) -> None:
    report = eval_model(run_dir, device="cpu")
    errors = report.errors
    assert [e.k for e in errors] == [1, 5, 10, 25]
    assert [s.k for s in report.scores] == [1, 5, 10, 25] and report.modes is None  # Pendulum
    loaded = load_world_model(run_dir)
    store = EpisodeStore.load(run_dir / DATA_FILE)
    _, val = split_episodes(store, loaded.config.train.val_fraction, loaded.config.seed)
    for e in errors:  # each figure recomputed here: the k-step unroll against s[k]
        window = val.spaced_windows(e.k, 2048)
        z = loaded.model.sample_prior(
            *window.action.shape[:2], generator=torch.Generator().manual_seed(loaded.config.seed)
        )
        with torch.no_grad():
            final = loaded.model.rollout(window.obs[0], window.action, z)[-1]
        std = loaded.model.state_std
        expected = ((final - window.obs[e.k]) / std).square().mean().item()
        baseline = ((window.obs[0] - window.obs[e.k]) / std).square().mean().item()
        assert e.model == pytest.approx(expected, rel=1e-5)
        assert e.baseline == pytest.approx(baseline, rel=1e-5)
    assert errors[0].model < errors[0].baseline  # one step: even a tiny fit beats s' = s
    assert "baseline" in capsys.readouterr().out


def test_mpc_runs_episodes_side_by_side_in_a_vector_env(run_dir: Path, monkeypatch, capsys) -> None:
    """`wm mpc RUN --envs 2`: both episodes planned in one batched call per step."""
    from agents.mpc import MPCAgent

    widths = []
    act_batch = MPCAgent.act_batch

    def recording(self, obs, envs=None):
        widths.append(len(obs))
        return act_batch(self, obs, envs)

    monkeypatch.setattr(MPCAgent, "act_batch", recording)
    assert main(["mpc", str(run_dir), "--episodes", "2", "--envs", "2"]) == 0
    assert "over 2 episodes" in capsys.readouterr().out
    assert len(widths) == 200 and set(widths) == {2}  # Pendulum: 200 steps, both envs each step


def test_unknown_env_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents.app.cli",
            "train",
            "--env",
            "Nope-v0",
            "--runs-dir",
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
    assert main(["train", "--train.lr", "-1", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "lr must be positive" in err and "Traceback" not in err


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """The configs `wm train` and `wm run` start (nothing is trained or run)."""
    configs: list[Config] = []
    monkeypatch.setattr("agents.app.train.train", configs.append)
    monkeypatch.setattr("agents.app.loop.run", configs.append)
    return configs


@pytest.mark.parametrize("option", ["--runs-dir", "--runs_dir"])
def test_dashed_and_underscored_options_reach_the_config(option: str, started) -> None:
    assert main(["train", option, "elsewhere", "--train.max_steps", "7", "--no-video"]) == 0
    (config,) = started
    assert config.runs_dir == "elsewhere"
    assert config.train.max_steps == 7 and config.video is False and config.progress is True


def test_options_given_override_the_task_presets_and_the_rest_stay(started) -> None:
    preset = PRESETS["InvertedPendulum-v5"]
    assert preset["planner.horizon"] != Config().planner.horizon  # else the test shows nothing
    assert main(["run", "--env", "InvertedPendulum-v5", "--train.max-steps", "7"]) == 0
    # A given value equal to the default still beats the preset: only the default may not.
    args = ["--planner.horizon", str(Config().planner.horizon), "--planner.no-terminal-value"]
    assert main(["run", "--env", "InvertedPendulum-v5", *args]) == 0
    kept, overridden = started
    assert kept.train.max_steps == 7
    assert kept.planner.horizon == preset["planner.horizon"]
    assert kept.planner.iterations == preset["planner.iterations"] and kept.steps == 1_000
    assert kept.name == "run" and kept.planner.terminal_value
    assert overridden.planner.horizon == Config().planner.horizon
    assert not overridden.planner.terminal_value


def test_run_help_shows_the_field_docstrings_and_exits_0(capsys) -> None:
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "--train.max-steps INT Gradient steps per fit at most" in text
    assert "--resume RUN_DIR continue the run of RUN_DIR" in text
    assert "--video, --no-video Log real-vs-imagined videos" in text
    assert "--loop.seed-steps INT Random-action steps before the first model" in text


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", "--modle.hidden", "8"], "wm run: error: unrecognized arguments: --modle.hidden 8"),
        (["run", "--steps", "ten"], "wm run: error: argument --steps: invalid int value: 'ten'"),
        (["train", "--train.lr", "fast"], "argument --train.lr: invalid float value: 'fast'"),
        (["train", "--seed"], "wm train: error: argument --seed: expected one argument"),
        (["run", "--resume"], "argument --resume: expected one argument"),
        (["tasks", "--steps", "3"], "wm tasks: error: unrecognized arguments: --steps 3"),
        (["fly"], "wm: error: argument command: invalid choice: 'fly'"),
        (["mpc"], "wm mpc: error: the following arguments are required: run_dir"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_status_2(argv: list[str], words: str, capsys) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1, err
    assert words in err and err.rstrip().endswith("--help`") and not out


def test_resume_with_a_config_option_names_it_as_typed(started, tmp_path: Path, capsys) -> None:
    assert main(["run", "--resume", str(tmp_path), "--loop.seed_steps", "5"]) == 2
    assert "drop --loop.seed-steps" in capsys.readouterr().err and not started


def test_a_reader_that_leaves_early_is_no_error() -> None:
    """`wm tasks | head -1`: the pipe closes before wm writes; no traceback, exit 0."""
    child = subprocess.Popen(
        [sys.executable, "-m", "agents.app.cli", "tasks"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child.stdout.close()  # gone before the child (still importing torch) writes a line
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0 and b"Traceback" not in err, err.decode()
