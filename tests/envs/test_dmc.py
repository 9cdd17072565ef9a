"""DeepMind Control through shimmy, with the compatibility shim of envs.dmc: the four suite
tasks load, reset and step, their rewards answer to the state (the named indexing the shim
keeps), and their episodes end at the time limit only."""

from __future__ import annotations

import numpy as np
import pytest

from envs import dmc, make_task

pytestmark = pytest.mark.skipif(
    not dmc.available(),
    reason="dm_control and shimmy are not installed (pip install 'shimmy[dm-control]')",
)

DIMS = {  # (obs, act) of the flattened observations
    "dm_control/cartpole-swingup-v0": (5, 1),
    "dm_control/reacher-easy-v0": (6, 2),
    "dm_control/cheetah-run-v0": (17, 6),
    "dm_control/walker-walk-v0": (24, 6),
}


@pytest.mark.parametrize("env_id", dmc.SUITE)
def test_suite_tasks_reset_and_step_with_a_learned_cost(env_id: str) -> None:
    task = make_task(env_id)
    assert (task.obs_dim, task.act_dim) == DIMS[env_id]
    assert task.cost is None and task.terminated is None and not task.terminates
    assert task.max_episode_steps == 1000 and 0 < task.dt <= 0.05
    env = task.make_env(seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (task.obs_dim,) and np.isfinite(obs).all()
    rng = np.random.default_rng(0)
    rewards = []
    for _ in range(20):
        obs, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, task.act_dim))
        assert np.isfinite(obs).all() and not terminated and not truncated
        rewards.append(reward)
    assert all(0.0 <= r <= 1.0 for r in rewards)  # the suite's rewards lie in [0, 1]
    again = task.make_env(seed=0)
    np.testing.assert_array_equal(again.reset(seed=0)[0], env.reset(seed=0)[0])


def test_cartpole_reward_is_one_upright_and_centred_and_small_hanging_down() -> None:
    """The reward reads the pole's orientation through dm_control's named indexing, which
    the shim rebuilt: upright, centred and at rest it is 1; hanging down about 0."""
    env = make_task("dm_control/cartpole-swingup-v0").make_env(seed=0)
    env.reset(seed=0)
    physics = env.unwrapped._env.physics
    rewards = {}
    for name, angle in (("upright", 0.0), ("down", np.pi)):
        with physics.reset_context():
            physics.named.data.qpos["slider"] = 0.0
            physics.named.data.qpos["hinge_1"] = angle
            physics.data.qvel[:] = 0.0
        rewards[name] = env.step(np.zeros(1))[1]
    assert rewards["upright"] == pytest.approx(1.0, abs=1e-3)
    assert rewards["down"] < 0.01


def test_an_episode_ends_by_truncation_at_1000_steps() -> None:
    env = make_task("dm_control/cartpole-swingup-v0").make_env(seed=0)
    env.reset(seed=0)
    for t in range(1, 1001):
        _, _, terminated, truncated, _ = env.step(np.zeros(1))
        assert not terminated and truncated == (t == 1000), t


def test_the_shim_drops_only_fields_this_mujoco_lacks() -> None:
    import mujoco
    from dm_control.mujoco.wrapper.mjbindings import sizes

    dmc.drop_missing_fields()
    model = mujoco.MjModel.from_xml_string("<mujoco/>")
    assert all(hasattr(model, f) for f in sizes.array_sizes["mjmodel"])
    assert all(hasattr(mujoco.MjData(model), f) for f in sizes.array_sizes["mjdata"])
    assert "qpos0" in sizes.array_sizes["mjmodel"] and "qpos" in sizes.array_sizes["mjdata"]
    assert dmc.drop_missing_fields() == {"mjmodel": [], "mjdata": []}  # idempotent


def test_wm_train_and_dream_run_a_suite_task_by_id(tmp_path, capsys) -> None:
    """From the command line, by id: a world model and the learned cost fit on random steps
    of cartpole-swingup, then `wm dream` runs in it (no exact cost anywhere)."""
    from agents.app.cli import main
    from agents.app.runs.folder import load_world_model

    runs = tmp_path / "runs"
    tiny = ["--steps", "1100", "--train.max_steps", "20", "--train.eval_every", "10",
            "--model.hidden", "16", "--cost-model.hidden", "16", "--train.batch_size", "16",
            "--no-progress", "--no-video", "--threads", "1", "--device", "cpu"]  # fmt: skip
    assert main(["train", "--env", "dm_control/cartpole-swingup-v0", *tiny,
                 "--runs_dir", str(runs)]) == 0  # fmt: skip
    (run_dir,) = runs.iterdir()
    assert run_dir.name.startswith("dm_control-cartpole-swingup-v0__train__0__")
    loaded = load_world_model(run_dir)
    assert loaded.config.cost == "learned" and loaded.costs.learned is not None
    assert loaded.costs.terminated is None  # the suite's tasks never end early
    capsys.readouterr()
    assert main(["dream", str(run_dir), "--steps", "20", "--no-video"]) == 0
    assert "dreamt 20 steps with the random agent" in capsys.readouterr().out
