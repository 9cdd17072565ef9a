"""`--cost learned`: the cost is fit beside the world model in `wm train` and `wm run`,
checkpointed with it, restored on resume, and used by evaluation and the learned simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_run import TINY_LOOP

import agents.app.loop
from agents.app.cli import main
from agents.app.dream import make_dream_env
from agents.app.media.logger import Logger
from agents.app.runs.folder import CHECKPOINT_FILE, load_world_model
from worldmodel.cost.learned import LearnedCost
from worldmodel.io.checkpoint import load_checkpoint

TRAIN = [
    *("--env", "Pendulum-v1", "--steps", "600", "--train.max_steps", "200"),
    *("--train.eval_every", "50", "--train.patience", "10", "--model.hidden", "32"),
    *("--train.batch_size", "32", "--no-progress", "--no-video", "--threads", "1"),
    *("--device", "cpu", "--cost-model.hidden", "16"),
]
RUN = ["--env", "Pendulum-v1", "--steps", "800", "--loop.seed_steps", "200", *TINY_LOOP]
RUN += ["--threads", "1", "--cost", "learned", "--cost-model.hidden", "16"]


def _only(runs: Path) -> Path:
    (run_dir,) = runs.iterdir()
    return run_dir


def _train(runs: Path, *options: str) -> Path:
    assert main(["train", *TRAIN, *options, "--runs_dir", str(runs)]) == 0
    return _only(runs)


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny `wm train --cost learned` on Pendulum."""
    return _train(tmp_path_factory.mktemp("learned"), "--cost", "learned")


def _assert_same_checkpoint(final: Path, expected: Path) -> None:
    got, got_meta = load_checkpoint(final / CHECKPOINT_FILE)
    want, want_meta = load_checkpoint(expected / CHECKPOINT_FILE)
    assert got.keys() == want.keys()
    for group, tensors in want.items():
        for key, tensor in tensors.items():
            assert torch.equal(got[group][key], tensor), f"{group}/{key} differs"
    assert got_meta.get("train") == want_meta.get("train")
    assert got_meta.get("resume") == want_meta.get("resume")


def test_train_fits_the_cost_beside_the_model_and_checkpoints_it(learned_run: Path) -> None:
    groups, meta = load_checkpoint(learned_run / CHECKPOINT_FILE)
    assert groups.keys() == {"model", "cost"} and meta["config"]["cost"] == "learned"
    loaded = load_world_model(learned_run)
    learned = loaded.costs.learned
    assert isinstance(learned, LearnedCost) and learned.termination_net is None  # Pendulum
    assert loaded.costs.cost is learned and loaded.costs.planning_cost is learned
    for key, tensor in learned.state_dict().items():
        assert torch.equal(tensor, groups["cost"][key]), key
    # Fitted to the rewards: mean and spread are the data's, not the initial 0 and 1.
    assert learned.cost_mean.item() > 1.0 and learned.cost_std.item() > 0.5
    events = EventAccumulator(str(learned_run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"cost/train/loss", "cost/val/loss", "cost/val/cost_error"} <= tags
    assert {"val/reward_mse_1", "val/reward_mse_1_baseline", "val/reward_mse_25"} <= tags
    # After 200 steps the one-step reward error is well below the reward's variance.
    (error,), (variance,) = (
        events.Scalars("val/reward_mse_1"),
        events.Scalars("val/reward_mse_1_baseline"),
    )
    assert error.value < 0.5 * variance.value


def test_the_world_model_is_the_same_whether_the_cost_is_exact_or_learned(
    learned_run: Path, tmp_path: Path
) -> None:
    exact = _train(tmp_path / "exact")
    got, _ = load_checkpoint(learned_run / CHECKPOINT_FILE)
    want, _ = load_checkpoint(exact / CHECKPOINT_FILE)
    for key, tensor in want["model"].items():
        assert torch.equal(got["model"][key], tensor), key


def test_eval_model_reports_the_k_step_reward_errors(learned_run: Path, capsys) -> None:
    assert main(["eval-model", str(learned_run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "reward mse" in out and "(learned cost; reward units)" in out


def _stopped_train(runs: Path, monkeypatch: pytest.MonkeyPatch, cost_validations: int) -> Path:
    """A `wm train --cost learned` stopped as it logs its `cost_validations`-th validation of
    the cost (the model's fit done), before that validation's checkpoint."""
    real, seen = Logger.scalars, []

    def scalars(self: Logger, metrics: dict[str, float], step: int) -> None:
        seen.extend(["val"] if "cost/val/loss" in metrics else [])
        if len(seen) == cost_validations:
            raise KeyboardInterrupt
        real(self, metrics, step)

    monkeypatch.setattr(Logger, "scalars", scalars)
    assert main(["train", *TRAIN, "--cost", "learned", "--runs_dir", str(runs)]) == 130
    monkeypatch.undo()
    return _only(runs)


def test_train_resumed_while_fitting_the_cost_ends_like_an_unbroken_run(
    learned_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    stopped = _stopped_train(tmp_path / "runs", monkeypatch, cost_validations=3)
    groups, meta = load_checkpoint(stopped / CHECKPOINT_FILE)
    assert meta["train"]["phase"] == "cost" and meta["train"]["cost"]["fit"]["steps"] == 100
    assert meta["train"]["model_fit"]["steps"] == 200 and meta["model_steps"] == 200
    assert {"best_cost", "optim_cost"} <= groups.keys() and "cost_trainer" in groups["rng"]
    capsys.readouterr()
    assert main(["train", "--resume", str(stopped)]) == 0
    assert "at 200 of 200 gradient steps" in capsys.readouterr().out
    _assert_same_checkpoint(stopped, learned_run)


def _stopped_run(runs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `wm run --cost learned` stopped (Ctrl-C) in its second loop episode."""
    real, calls = agents.app.loop.run_round_traced, []

    def episode(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(agents.app.loop, "run_round_traced", episode)
    assert main(["run", *RUN, "--runs_dir", str(runs)]) == 130
    monkeypatch.undo()
    return _only(runs)


@pytest.mark.slow
def test_run_resumed_ends_like_an_unbroken_run_cost_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["run", *RUN, "--runs_dir", str(tmp_path / "whole")]) == 0
    whole = _only(tmp_path / "whole")
    stopped = _stopped_run(tmp_path / "stopped", monkeypatch)
    groups, meta = load_checkpoint(stopped / CHECKPOINT_FILE)
    assert {"cost", "optim_cost"} <= groups.keys() and "cost_trainer" in groups["rng"]
    assert meta["resume"]["learner_counters"]["cost_total_steps"] > 0
    assert main(["run", "--resume", str(stopped)]) == 0
    _assert_same_checkpoint(stopped, whole)
    events = EventAccumulator(str(whole))
    events.Reload()
    assert {"cost/val/loss", "val/reward_mse_1", "charts/eval_return"} <= set(
        events.Tags()["scalars"]
    )


def test_the_learned_simulator_pays_the_learned_cost(learned_run: Path) -> None:
    env = make_dream_env(learned_run)
    learned = load_world_model(learned_run).costs.learned
    assert isinstance(env.core.cost, LearnedCost) and env.core.terminated is None
    obs, _ = env.reset(seed=0)
    action = np.array([0.5], np.float32)
    next_obs, reward, *_ = env.step(action)
    s, a, s2 = (torch.as_tensor(x)[None] for x in (obs, action, next_obs))
    with torch.no_grad():
        assert reward == pytest.approx(-learned(s, a, s2).item(), rel=1e-5)


def test_dream_and_mpc_run_on_a_learned_cost(learned_run: Path, capsys) -> None:
    assert main(["dream", str(learned_run), "--agent", "mpc", "--steps", "20", "--no-video"]) == 0
    assert "dreamt 20 steps with the mpc agent" in capsys.readouterr().out
    assert main(["mpc", str(learned_run), "--episodes", "1", "--device", "cpu"]) == 0
    assert "Pendulum-v1: mean return" in capsys.readouterr().out
