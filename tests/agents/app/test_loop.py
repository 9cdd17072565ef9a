import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_run import TINY_LOOP

from agents.app.cli import main
from agents.app.episodes import planned_vs_realised
from worldmodel.data.store import EpisodeStore

TINY = ["--env", "Pendulum-v1", "--steps", "250", "--loop.seed_steps", "150", *TINY_LOOP]


@pytest.mark.parametrize("agent", ["mpc", "policy", "mpc+policy"])
def test_run_loop_counts_steps_logs_and_checkpoints(agent: str, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(["run", *TINY, "--agent", agent, "--runs_dir", str(runs), "--threads", "1"]) == 0
    (run_dir,) = runs.iterdir()
    assert (run_dir / "checkpoint.safetensors").is_file() and (run_dir / "data.npz").is_file()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"charts/episodic_return", "charts/eval_return", "train/loss"} <= tags
    if agent != "policy":
        assert "charts/planner_ms_per_action" in tags and "charts/planned_cost" in tags
        assert "plan/cost_error" in tags
    if agent != "mpc":
        assert {
            "policy/imagined_return",
            "critic/loss",
            "policy/imagined_minus_real_return",
        } <= tags
    returns = events.Scalars("charts/episodic_return")
    assert returns[-1].step == 250, "the budget counts every real step, random ones included"
    # The steps after the 150 random ones are the agent's: its own actions, not a constant.
    acted = EpisodeStore.load(run_dir / "data.npz").data["action"][150:]
    assert len(acted) == 100 and np.abs(acted).max() <= 1.0 and acted.std() > 0.05
    assert main(["mpc", str(run_dir), "--episodes", "1", "--device", "cpu"]) == 0
    assert "mean return" in capsys.readouterr().out


def test_planned_vs_realised_compares_the_same_window() -> None:
    costs = np.arange(6, dtype=float)
    planned, realised = planned_vs_realised([10.0, 20.0, 30.0, 40.0, 50.0, 60.0], costs, 3)
    assert realised == pytest.approx(np.mean([0 + 1 + 2, 1 + 2 + 3, 2 + 3 + 4, 3 + 4 + 5]))
    assert planned == pytest.approx(np.mean([10, 20, 30, 40]))
    assert np.isnan(planned_vs_realised([1.0], np.ones(1), 3)[0])


def test_main_job_run_shows_scalars_video_figures_and_hparams(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = [a for a in TINY if a != "--no-video"]
    assert main(["run", *args, "--runs_dir", str(runs), "--threads", "1"]) == 0
    (run_dir,) = runs.iterdir()
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {"imagination/real_vs_imagined", "imagination/predictions"} <= set(
        events.Tags()["images"]
    )
    assert "charts/eval_return" in events.Tags()["scalars"]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


@pytest.mark.parametrize("agent", ["mpc", "policy"])
def test_run_envs_collects_episodes_side_by_side_within_the_budget(
    agent: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wm run --envs 3`: one batched decision for the three envs a step; three episodes per
    round, cut together by the budget, logged at their own step counts."""
    from agents.mpc import MPCAgent
    from agents.policy import PolicyAgent
    from worldmodel.io.checkpoint import load_checkpoint

    actor = MPCAgent if agent == "mpc" else PolicyAgent
    widths, act_batch = [], actor.act_batch

    def recording(self, obs, envs=None):
        widths.append(len(obs))
        return act_batch(self, obs, envs)

    monkeypatch.setattr(actor, "act_batch", recording)
    runs = tmp_path / "runs"
    options = ["--steps", "600", "--envs", "3", "--agent", agent, "--runs_dir", str(runs)]
    assert main(["run", *TINY, *options, "--threads", "1"]) == 0
    (run_dir,) = runs.iterdir()
    data = EpisodeStore.load(run_dir / "data.npz").data
    assert len(data["reward"]) == 600 and data["truncated"].sum() == 4  # the seed episode too
    assert all(w == 3 for w in widths[: 450 // 3 - 1])  # the training decisions, batched
    events = EventAccumulator(str(run_dir))
    events.Reload()
    steps = [e.step for e in events.Scalars("charts/episodic_return")]
    assert steps == [150, 300, 450, 600]
    _, meta = load_checkpoint(run_dir / "checkpoint.safetensors")
    assert meta["resume"]["counters"] == {"steps": 600, "episode": 4, "iteration": 4}


def test_step_updates_train_during_episodes_at_the_set_ratio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--loop.update-every 10 --loop.model-updates 2`: after the first fit, 2 model steps
    (and a policy update) every 10 env steps, on the episodes ended so far; no refit."""
    import agents.app.loop
    from agents.app.updates import StepUpdates
    from worldmodel.io.checkpoint import load_checkpoint

    seen, update = [], StepUpdates.update

    def recording(self):
        seen.append((len(self.store), self.learners.trainer.total_steps))
        return update(
            self,
        )

    refits, retrain = [], agents.app.loop._retrain
    monkeypatch.setattr(StepUpdates, "update", recording)
    monkeypatch.setattr(agents.app.loop, "_retrain", lambda *a: refits.append(1) or retrain(*a))
    runs = tmp_path / "runs"
    options = ["--loop.update-every", "10", "--loop.model-updates", "2", "--agent", "mpc+policy"]
    assert main(["run", *TINY, *options, "--runs_dir", str(runs), "--threads", "1"]) == 0
    assert len(seen) == 10  # steps 160, 170, ..., 250
    assert all(length == 150 for length, _ in seen)  # the episode running is not yet data
    model_steps = [steps for _, steps in seen]
    assert np.diff(model_steps).tolist() == [2] * 9
    assert len(refits) == 1  # the first fit, on the random steps, only
    (run_dir,) = runs.iterdir()
    _, meta = load_checkpoint(run_dir / "checkpoint.safetensors")
    assert meta["model_steps"] == model_steps[-1] + 2
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert {"train/loss", "val/loss", "policy/loss"} <= set(events.Tags()["scalars"])


def test_step_updates_that_diverge_leave_a_checkpoint_marked_diverged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from agents.app.updates import StepUpdates
    from worldmodel.errors import TrainingDivergedError
    from worldmodel.io.checkpoint import load_checkpoint

    def diverge(self):
        raise TrainingDivergedError("training diverged: lower --train.lr")

    monkeypatch.setattr(StepUpdates, "update", diverge)
    runs = tmp_path / "runs"
    options = ["--loop.update-every", "10", "--runs_dir", str(runs), "--threads", "1"]
    assert main(["run", *TINY, *options]) == 2
    assert capsys.readouterr().err.strip() == "wm run: error: training diverged: lower --train.lr"
    (run_dir,) = runs.iterdir()
    _, meta = load_checkpoint(run_dir / "checkpoint.safetensors")
    assert meta["diverged"] is True and len(EpisodeStore.load(run_dir / "data.npz")) == 150


def test_run_on_hopper_takes_its_locomotion_presets_end_to_end(tmp_path: Path) -> None:
    """`wm run --env Hopper-v5` on its presets (small sizes aside): the policy, updates between
    steps, the normalisation following the data; episodes end when the hopper falls."""
    runs = tmp_path / "runs"
    argv = ["run", "--env", "Hopper-v5", "--steps", "300", "--loop.seed_steps", "150", *TINY_LOOP]
    assert main([*argv, "--runs_dir", str(runs), "--threads", "1"]) == 0
    (run_dir,) = runs.iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["agent"] == "policy" and config["loop"]["renormalize"]
    assert config["loop"]["update_every"] == 10
    data = EpisodeStore.load(run_dir / "data.npz").data
    assert len(data["obs"]) == 300 and data["terminated"].any()
