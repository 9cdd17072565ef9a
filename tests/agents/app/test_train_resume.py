"""`wm train --resume`: a stopped `wm train` continues exactly where its last checkpoint stopped."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import agents.app.train
from agents.app.cli import main
from agents.app.media.logger import Logger
from worldmodel.data.store import EpisodeStore
from worldmodel.io.checkpoint import (
    global_rng_state,
    load_checkpoint,
    load_global_rng_state,
    save_checkpoint,
)

TINY = [
    *("--env", "Pendulum-v1", "--steps", "600", "--train.max_steps", "40"),
    *("--train.eval_every", "10", "--train.patience", "10", "--model.hidden", "32"),
    *("--train.batch_size", "32", "--no-progress", "--no-video", "--threads", "1"),
    *("--device", "cpu"),
]


def _train(runs: Path) -> Path:
    assert main(["train", *TINY, "--runs_dir", str(runs)]) == 0
    (run_dir,) = runs.iterdir()
    return run_dir


def _stopped(runs: Path, monkeypatch: pytest.MonkeyPatch, validations: int | None) -> Path:
    """A `wm train` stopped (Ctrl-C) while collecting (`validations` None), or as it logs its
    `validations`-th validation, before that validation's checkpoint."""
    if validations is None:

        def stop(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(agents.app.train, "collect", stop)
    else:
        real, seen = Logger.scalars, []

        def scalars(self: Logger, metrics: dict[str, float], step: int) -> None:
            seen.extend(["val"] if "val/loss" in metrics else [])
            if len(seen) == validations:
                raise KeyboardInterrupt
            real(self, metrics, step)

        monkeypatch.setattr(Logger, "scalars", scalars)
    assert main(["train", *TINY, "--runs_dir", str(runs)]) == 130
    monkeypatch.undo()
    (run_dir,) = runs.iterdir()
    return run_dir


def _data(run_dir: Path) -> dict[str, np.ndarray]:
    return EpisodeStore.load(run_dir / "data.npz").data


@pytest.mark.parametrize(
    ("validations", "resumed_at"),
    [(None, 0), (1, 0), (3, 20)],
    ids=["killed-collecting", "killed-before-1st-checkpoint", "killed-after-2nd-checkpoint"],
)
def test_resume_ends_with_the_weights_of_an_uninterrupted_run(
    validations: int | None, resumed_at: int, tmp_path: Path, monkeypatch, capsys
) -> None:
    whole = _train(tmp_path / "whole")
    stopped = _stopped(tmp_path / "stopped", monkeypatch, validations)
    assert (stopped / "data.npz").exists() == (validations is not None)
    if resumed_at:
        _, meta = load_checkpoint(stopped / "checkpoint.safetensors")
        assert meta["model_steps"] == resumed_at and not meta["train"]["complete"]
        assert meta["train"]["fit"]["steps"] == resumed_at
    data_before = (stopped / "data.npz").read_bytes() if validations else None
    config_before = (stopped / "config.json").read_bytes()
    capsys.readouterr()

    assert main(["train", "--resume", str(stopped)]) == 0

    assert f"at {resumed_at} of 40 gradient steps" in capsys.readouterr().out
    assert (stopped / "config.json").read_bytes() == config_before
    if data_before is not None:
        assert (stopped / "data.npz").read_bytes() == data_before, "the data is reused"
    for key, array in _data(whole).items():  # collected again: the same data
        np.testing.assert_array_equal(_data(stopped)[key], array)
    final, final_meta = load_checkpoint(stopped / "checkpoint.safetensors")
    expected, expected_meta = load_checkpoint(whole / "checkpoint.safetensors")
    assert final_meta["train"] == expected_meta["train"] == {"version": 1, "complete": True}
    assert final_meta["model_steps"] == expected_meta["model_steps"] == 40
    assert final.keys() == expected.keys() == {"model"}
    for key, tensor in expected["model"].items():
        assert torch.equal(final["model"][key], tensor), f"model/{key} differs"
    assert not list(stopped.glob(".*.tmp"))


def test_checkpoint_holds_the_fit_optimiser_and_rng_state(tmp_path: Path, monkeypatch) -> None:
    stopped = _stopped(tmp_path / "runs", monkeypatch, validations=2)
    groups, meta = load_checkpoint(stopped / "checkpoint.safetensors")
    assert {"model", "best_model", "optim_model", "rng", "average_model"} <= groups.keys()
    assert float(groups["optim_model"]["0.step"]) == meta["model_steps"] == 10  # Adam's count
    assert {"trainer", "torch_global"} <= groups["rng"].keys()
    state = meta["train"]
    assert state["fit"]["steps"] == 10 and state["fit"]["bad_evals"] == 0
    assert state["counters"]["total_steps"] == 10 and "state" in state["numpy_rng"]


def test_a_finished_run_is_left_as_it_is(tmp_path: Path, capsys) -> None:
    run_dir = _train(tmp_path / "runs")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out.strip()
    assert "already complete (40 gradient steps); nothing to resume" in out
    assert "\n" not in out
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def _refused_resume(stopped: Path, capsys) -> str:
    """`wm train --resume stopped` refused: exit 2, one line on stderr (returned), no file of
    the run changed."""
    before = {p.name: p.read_bytes() for p in stopped.iterdir()}
    capsys.readouterr()
    assert main(["train", "--resume", str(stopped)]) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err
    assert {p.name: p.read_bytes() for p in stopped.iterdir()} == before
    return err


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path: Path, monkeypatch, capsys):
    stopped = _stopped(tmp_path / "runs", monkeypatch, validations=3)
    config = json.loads((stopped / "config.json").read_text())
    config["train"]["lr"] = 0.01
    (stopped / "config.json").write_text(json.dumps(config))
    assert "train.lr is 0.001 there, 0.01 in config.json" in _refused_resume(stopped, capsys)


def test_a_run_written_before_an_option_existed_still_resumes(tmp_path: Path, monkeypatch):
    # Options added since the run was written are absent from its files; it ran with their
    # defaults, so its checkpoint is still its own.
    stopped = _stopped(tmp_path / "runs", monkeypatch, validations=3)
    config = json.loads((stopped / "config.json").read_text())
    del config["planner"]["horizon"]
    (stopped / "config.json").write_text(json.dumps(config))
    path = stopped / "checkpoint.safetensors"
    groups, meta = load_checkpoint(path)
    del meta["config"]["planner"]["horizon"]
    save_checkpoint(path, groups, meta)
    assert main(["train", "--resume", str(stopped)]) == 0


def test_resume_refuses_a_weight_average_that_does_not_fit(tmp_path: Path, monkeypatch, capsys):
    stopped = _stopped(tmp_path / "runs", monkeypatch, validations=3)
    path = stopped / "checkpoint.safetensors"
    groups, meta = load_checkpoint(path)
    name = next(iter(groups["average_model"]))
    groups["average_model"][name] = groups["average_model"][name] * float("nan")
    save_checkpoint(path, groups, meta)
    err = _refused_resume(stopped, capsys)
    assert "world model weight average that does not fit this model" in err


def test_train_and_run_resume_refuse_each_others_runs(tmp_path: Path, monkeypatch, capsys):
    stopped = _stopped(tmp_path / "runs", monkeypatch, validations=3)
    capsys.readouterr()
    assert main(["run", "--resume", str(stopped)]) == 2
    assert "holds no loop state" in capsys.readouterr().err
    path = stopped / "checkpoint.safetensors"
    groups, meta = load_checkpoint(path)
    meta["resume"] = meta.pop("train")  # where a `wm run` checkpoint keeps its state
    save_checkpoint(path, groups, meta)
    assert main(["train", "--resume", str(stopped)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no training state" in err and "wm run --resume" in err and "\n" not in err


def test_global_rng_state_round_trips_without_cuda_unless_cuda_is_in_use() -> None:
    states = global_rng_state()
    in_use = torch.cuda.is_available() and torch.cuda.is_initialized()
    assert any(k.startswith("torch_cuda.") for k in states) == in_use
    assert all(s.dtype == torch.uint8 for s in states.values())
    expected = torch.rand(3)
    torch.rand(5)
    load_global_rng_state(states | {"torch_cuda.99": states["torch_global"]})  # no such device
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_global_rng_state_holds_and_restores_the_cuda_state() -> None:
    torch.zeros(1, device="cuda")  # CUDA in use
    states = global_rng_state()
    assert "torch_cuda.0" in states and states["torch_cuda.0"].device.type == "cpu"
    expected = torch.rand(3, device="cuda")
    torch.rand(5, device="cuda")
    load_global_rng_state(states)
    assert torch.equal(torch.rand(3, device="cuda"), expected)
