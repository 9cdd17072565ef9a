"""`wm run --resume`: a resumed run continues exactly where its checkpoint stopped."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_run import TINY_LOOP

import agents.app.loop
from agents.app.cli import main
from agents.app.runs.lock import LOCK_FILE
from worldmodel.data.store import EpisodeStore
from worldmodel.io.checkpoint import load_checkpoint, save_checkpoint

TINY = [
    "--env",
    "Pendulum-v1",
    "--steps",
    "800",
    "--loop.seed_steps",
    "200",
    *TINY_LOOP,
    "--threads",
    "1",
]


def _run(runs: Path, agent: str, extra: tuple[str, ...] = ()) -> Path:
    assert main(["run", *TINY, *extra, "--agent", agent, "--runs_dir", str(runs)]) == 0
    (run_dir,) = runs.iterdir()
    return run_dir


def _interrupted_run(
    runs: Path, agent: str, monkeypatch, episodes: int, extra: tuple[str, ...] = ()
) -> Path:
    """A run stopped (Ctrl-C) during its `episodes`+1-th round of loop episodes."""
    real, calls = agents.app.loop.run_round_traced, []

    def episode(*args, **kwargs):
        calls.append(1)
        if len(calls) > episodes:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(agents.app.loop, "run_round_traced", episode)
    assert main(["run", *TINY, *extra, "--agent", agent, "--runs_dir", str(runs)]) == 130
    monkeypatch.setattr(agents.app.loop, "run_round_traced", real)
    (run_dir,) = runs.iterdir()
    return run_dir


@pytest.mark.parametrize(
    ("agent", "envs", "update_every", "renormalize"),
    [("mpc", 1, 0, False), ("mpc+policy", 1, 0, False), ("mpc", 2, 0, False),
     ("mpc+policy", 1, 50, False), ("mpc+policy", 1, 0, True)],
    ids=["mpc", "policy", "envs2", "step-updates", "renormalize"],
)  # fmt: skip
def test_resume_continues_exactly_like_an_uninterrupted_run(
    agent: str, envs: int, update_every: int, renormalize: bool, tmp_path: Path, monkeypatch
) -> None:
    """Stopped in its second round (of `envs` episodes side by side), resumed from the first;
    with `update_every`, the updates between steps are the same too; with `renormalize`, the
    renormalisations."""
    extra = ("--envs", str(envs), "--loop.update-every", str(update_every),
             "--loop.renormalize" if renormalize else "--loop.no-renormalize")  # fmt: skip
    whole = _run(tmp_path / "whole", agent, extra)
    stopped = _interrupted_run(tmp_path / "stopped", agent, monkeypatch, 1, extra)
    config_before = (stopped / "config.json").read_bytes()
    groups, meta = load_checkpoint(stopped / "checkpoint.safetensors")
    counted = 1 + envs  # the seed episode, then one round
    assert meta["resume"]["counters"] == {"steps": 200 * counted, "episode": counted,
                                          "iteration": counted}  # fmt: skip
    assert meta["resume"]["learner_counters"]["model_total_steps"] > 0
    assert float(groups["optim_model"]["0.step"]) == meta["model_steps"]  # Adam's step count
    assert main(["run", "--resume", str(stopped)]) == 0
    assert (stopped / "config.json").read_bytes() == config_before
    final, final_meta = load_checkpoint(stopped / "checkpoint.safetensors")
    expected, expected_meta = load_checkpoint(whole / "checkpoint.safetensors")
    assert final_meta["resume"] == expected_meta["resume"]
    assert final.keys() == expected.keys()
    for group, tensors in expected.items():
        for key, tensor in tensors.items():
            assert torch.equal(final[group][key], tensor), f"{group}/{key} differs"
    data = EpisodeStore.load(stopped / "data.npz")
    assert len(data) == 800 and data.next_episode == final_meta["resume"]["counters"]["episode"]


def test_resume_drops_data_newer_than_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    stopped = _interrupted_run(tmp_path / "runs", "mpc", monkeypatch, episodes=1)
    # As if killed between data.npz and the checkpoint: the data holds one more episode.
    store = EpisodeStore.load(stopped / "data.npz")
    extra = next(iter(store.episodes()))
    store.add_episode(
        *(extra[k] for k in ("obs", "action", "reward", "next_obs")),
        extra["terminated"],
        extra["truncated"],
    )
    store.save(stopped / "data.npz")
    assert main(["run", "--resume", str(stopped)]) == 0
    _, meta = load_checkpoint(stopped / "checkpoint.safetensors")
    assert meta["env_steps"] == 800 and len(EpisodeStore.load(stopped / "data.npz")) == 800


def test_resume_refuses_a_checkpoint_of_other_dimensions(tmp_path: Path, monkeypatch, capsys):
    stopped = _interrupted_run(tmp_path / "runs", "mpc", monkeypatch, episodes=1)
    path = stopped / "checkpoint.safetensors"
    groups, meta = load_checkpoint(path)
    meta |= {"obs_dim": 11, "act_dim": 3}
    save_checkpoint(path, groups, meta)
    before = path.read_bytes()
    capsys.readouterr()
    assert main(["run", "--resume", str(stopped)]) == 2
    err = capsys.readouterr().err.strip()
    assert "obs/action dims 11/3" in err and "3/1" in err and "\n" not in err
    assert path.read_bytes() == before


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path: Path, monkeypatch, capsys):
    stopped = _interrupted_run(tmp_path / "runs", "mpc", monkeypatch, episodes=1)
    config = json.loads((stopped / "config.json").read_text())
    config["model"]["hidden"] = 64
    (stopped / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["run", "--resume", str(stopped)]) == 2
    err = capsys.readouterr().err
    assert "model.hidden is 32 there, 64 in config.json" in err


def test_resume_refuses_a_checkpoint_without_loop_state(tmp_path: Path, monkeypatch, capsys):
    stopped = _interrupted_run(tmp_path / "runs", "mpc", monkeypatch, episodes=1)
    path = stopped / "checkpoint.safetensors"
    groups, meta = load_checkpoint(path)
    del meta["resume"]
    save_checkpoint(path, groups, meta)
    capsys.readouterr()
    assert main(["run", "--resume", str(stopped)]) == 2
    assert "holds no loop state" in capsys.readouterr().err


def test_resume_rejects_other_options(tmp_path: Path, capsys) -> None:
    assert main(["run", "--resume", str(tmp_path), "--steps", "5"]) == 2
    assert "drop --steps" in capsys.readouterr().err


def test_resume_of_a_finished_run_leaves_it_as_it_is(tmp_path: Path, capsys) -> None:
    run_dir = _run(tmp_path, "mpc")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert "already complete (800 env steps)" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


SHORT = [*TINY]
SHORT[SHORT.index("--steps") + 1] = "400"


@pytest.fixture(scope="module")
def whole_short(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400-step run never stopped."""
    runs = tmp_path_factory.mktemp("whole")
    assert main(["run", *SHORT, "--runs_dir", str(runs)]) == 0
    (run_dir,) = runs.iterdir()
    return run_dir


@pytest.mark.parametrize("stopped_in", ["seed steps", "first checkpoint"])
def test_resume_before_the_first_checkpoint_starts_over_in_place(
    stopped_in: str, whole_short: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """As after a kill -9 before the first checkpoint (a stale lock left behind): the run starts
    over in its own folder and ends as one never stopped. Stopped while collecting the seed steps,
    or at the first checkpoint with data.npz written and the checkpoint not."""
    short, whole = SHORT, whole_short

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    where = "collect" if stopped_in == "seed steps" else "save_world_model"
    monkeypatch.setattr(agents.app.loop, where, stop)
    assert main(["run", *short, "--runs_dir", str(tmp_path / "stopped")]) == 130
    monkeypatch.undo()
    (stopped,) = (tmp_path / "stopped").iterdir()
    assert not (stopped / "checkpoint.safetensors").exists()
    assert (stopped / "data.npz").exists() == (stopped_in == "first checkpoint")
    (stopped / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": ""}))
    config_before = (stopped / "config.json").read_bytes()
    capsys.readouterr()

    assert main(["run", "--resume", str(stopped)]) == 0

    assert "has no checkpoint yet; starting it over in place" in capsys.readouterr().out
    assert (stopped / "config.json").read_bytes() == config_before
    assert not (stopped / LOCK_FILE).exists()
    final, final_meta = load_checkpoint(stopped / "checkpoint.safetensors")
    expected, expected_meta = load_checkpoint(whole / "checkpoint.safetensors")
    assert final_meta["resume"] == expected_meta["resume"]
    for group, tensors in expected.items():
        for key, tensor in tensors.items():
            assert torch.equal(final[group][key], tensor), f"{group}/{key} differs"
    assert len(EpisodeStore.load(stopped / "data.npz")) == 400


def test_resume_refuses_nan_in_the_optimiser_state(tmp_path: Path, monkeypatch, capsys) -> None:
    stopped = _interrupted_run(tmp_path / "runs", "mpc", monkeypatch, episodes=1)
    path = stopped / "checkpoint.safetensors"
    groups, meta = load_checkpoint(path)
    groups["optim_model"]["0.exp_avg_sq"].view(-1)[0] = float("inf")
    save_checkpoint(path, groups, meta)
    before = {p.name: p.read_bytes() for p in stopped.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["run", "--resume", str(stopped)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "wm run: error: model optimiser state '0.exp_avg_sq' has NaN or inf values; the "
        "checkpoint was saved from a diverged run: start a new run (lower --train.lr)"
    )
    assert {p.name: p.read_bytes() for p in stopped.iterdir() if p.is_file()} == before
