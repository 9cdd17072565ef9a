"""docs/custom_envs.md runs as written, at a smaller size: the example env is the one shown,
its exact cost is minus its reward, and it is trained and controlled from the command line
and from Python with a learned cost and termination."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.app.cli import main
from agents.app.runs.folder import CHECKPOINT_FILE, load_world_model
from envs import make_task, registry
from worldmodel.io.checkpoint import load_checkpoint

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "custom_envs.md"
EXAMPLE = ROOT / "examples" / "my_env.py"
ENV = "examples.my_env:MyEnv-v0"
SMALLER = {  # each must match the doc's text: a changed example fails here, not silently
    "steps=3000": "steps=600",
    "FitSchedule(max_steps=1000)": "FitSchedule(max_steps=20, eval_every=10)",
    "FitSchedule(horizon=1, max_steps=1000)": "FitSchedule(horizon=1, max_steps=20, eval_every=10)",
    "GradientPlanner(20,": "GradientPlanner(4,",
    "for i in range(3)]": "for i in range(1)]",
}
TINY_RUN = [
    *("--steps", "600", "--loop.seed_steps", "400", "--loop.first_train_steps", "20"),
    *("--loop.train_steps", "10", "--loop.eval_episodes", "1", "--train.eval_every", "10"),
    *("--train.batch_size", "32", "--model.hidden", "32", "--cost-model.hidden", "16"),
    *("--planner.horizon", "4", "--planner.iterations", "2"),
    *("--no-video", "--no-progress", "--threads", "1", "--device", "cpu"),
]


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture(autouse=True)
def _fresh_tasks(monkeypatch: pytest.MonkeyPatch):
    """Registrations of one test do not leak into the next (the gymnasium id stays)."""
    monkeypatch.setattr(registry, "_REGISTERED", {})
    registry._build.cache_clear()
    yield
    registry._build.cache_clear()


def test_the_env_shown_is_the_example_and_is_a_few_lines() -> None:
    shown = _blocks()[0]
    assert len(shown.strip().splitlines()) <= 30
    example = EXAMPLE.read_text()
    for line in shown.strip().splitlines():
        assert line in example, f"docs/custom_envs.md shows {line!r}, not in examples/my_env.py"


def test_the_exact_cost_and_termination_are_minus_the_reward_and_the_flag() -> None:
    from examples.my_env import cost, terminated

    task = make_task(ENV)
    assert task.cost is None and task.terminates and (task.obs_dim, task.act_dim) == (4, 2)
    env, rng = task.make_env(seed=0), np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rows = []
    while len(rows) < 300:
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        next_obs, reward, term, trunc, _ = env.step(action)
        rows.append((obs, action, next_obs, reward, term))
        obs = env.reset()[0] if term or trunc else next_obs
    s, a, s2 = (torch.as_tensor(np.stack([r[i] for r in rows]), dtype=torch.float64)
                for i in range(3))  # fmt: skip
    reward, done = np.array([r[3] for r in rows]), np.array([r[4] for r in rows])
    assert done.any() and not done.all()
    np.testing.assert_allclose(cost(s, a, s2).numpy(), -reward, atol=1e-5)
    np.testing.assert_array_equal(terminated(s2).numpy(), done)


def test_wm_run_trains_and_controls_it_from_the_command_line(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(["run", "--env", ENV, *TINY_RUN, "--runs_dir", str(runs)]) == 0
    (run_dir,) = runs.iterdir()
    assert run_dir.name.startswith("examples.my_env-MyEnv-v0__run__0__")
    groups, meta = load_checkpoint(run_dir / CHECKPOINT_FILE)
    assert meta["config"]["cost"] == "learned" and "cost" in groups
    learned = load_world_model(run_dir).costs.learned
    assert learned is not None and learned.termination_net is not None  # it may fall off
    assert learned.pos_weight.item() > 1.0  # terminations seen, and rarer than not
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert "imagination/predictions" in events.Tags()["images"]  # inspection without a video
    assert {"cost/val/termination", "val/reward_mse_1"} <= set(events.Tags()["scalars"])
    capsys.readouterr()
    assert main(["mpc", str(run_dir), "--episodes", "1", "--device", "cpu"]) == 0
    assert f"{ENV}: mean return" in capsys.readouterr().out
    assert main(["dream", str(run_dir), "--steps", "30", "--no-video"]) == 0


def test_the_python_example_runs(capsys) -> None:
    code = _blocks()[1]
    for before, after in SMALLER.items():
        assert before in code, f"docs/custom_envs.md no longer has {before!r}"
        code = code.replace(before, after)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102
    returns = namespace["returns"]
    assert len(returns) == 1 and np.isfinite(returns).all()
    assert namespace["costs"].terminated is not None  # the termination is learned too
    assert str(returns[0])[:5] in capsys.readouterr().out


def test_register_exact_cost_makes_the_cost_exact() -> None:
    from examples.my_env import register_exact_cost

    register_exact_cost()
    task = make_task(ENV)
    assert task.cost is not None and task.terminated is not None
    s, s2 = torch.zeros(1, 4), torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    # At the target, alive: cost -1, whatever the action (normalised or not: it costs nothing).
    assert task.cost(s, torch.ones(1, 2), s2).item() == pytest.approx(-1.0)
