import importlib.util
import io
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from PIL import Image, ImageSequence
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.app.cli import main
from agents.app.dream import make_batched_dream_env, register_dream_env, start_states
from agents.app.runs.folder import CHECKPOINT_FILE, DATA_FILE, save_world_model
from agents.configurator import build_model
from agents.configurator.config import Config, ModelConfig, PlannerConfig
from envs import make_task
from worldmodel.data.rollout import collect, random_policy
from worldmodel.data.store import EpisodeStore

DREAM_ID = register_dream_env()  # the id gymnasium.make knows the dream env by

EXAMPLE = Path(__file__).parents[3] / "examples" / "sac_in_dream.py"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder with an untrained tiny Pendulum model and 3 recorded episodes."""
    run = tmp_path_factory.mktemp("run")
    task = make_task("Pendulum-v1")
    config = Config(
        env=task.id,
        model=ModelConfig(hidden=16, layers=1),
        planner=PlannerConfig(horizon=5, iterations=2, latent_samples=2),
    )
    env = task.make_env(seed=0)
    store = EpisodeStore(task.obs_dim, task.act_dim)
    collect(env, random_policy(env, 0), 600, store, seed=0)
    store.save(run / DATA_FILE)
    torch.manual_seed(0)
    model = build_model(config.model, task.obs_dim, task.act_dim)
    model.set_normalization(store.stats())
    save_world_model(run / CHECKPOINT_FILE, config, task, model)
    return run


def test_registered_id_makes_an_env_that_passes_check_env(run_dir: Path) -> None:
    env = gym.make(DREAM_ID, run_dir=str(run_dir))
    check_env(env.unwrapped)  # also remakes it with render_mode='rgb_array' through the spec
    obs, _ = env.reset(seed=0)
    store = EpisodeStore.load(run_dir / DATA_FILE)
    assert (start_states(store) == obs).all(-1).any()  # episodes start where real ones did
    env.close()
    same = gym.make(DREAM_ID, run_dir=str(run_dir)).reset(seed=0)[0]
    np.testing.assert_array_equal(same, obs)


def test_episodes_last_the_tasks_time_limit(run_dir: Path) -> None:
    env = gym.make(DREAM_ID, run_dir=str(run_dir), max_episode_steps=6)
    env.reset(seed=0)
    ends = [env.step(env.action_space.sample())[3] for _ in range(6)]
    assert ends == [False] * 5 + [True]


def test_start_states_are_the_first_state_of_each_episode(run_dir: Path) -> None:
    store = EpisodeStore.load(run_dir / DATA_FILE)
    starts = start_states(store)
    assert starts.shape == (3, 3)
    np.testing.assert_array_equal(starts, [ep["obs"][0] for ep in store.episodes()])


def test_batched_env_from_a_run_folder(run_dir: Path) -> None:
    env = make_batched_dream_env(run_dir, 16, seed=0)
    result = env.step(torch.zeros(16, 1))
    assert result.obs.shape == (16, 3) and result.reward.shape == (16,)
    assert env.max_episode_steps == 200


@pytest.mark.parametrize("agent", ["random", "mpc"])
def test_wm_dream_logs_returns_and_a_video(run_dir: Path, agent: str) -> None:
    steps = 210 if agent == "random" else 4
    assert main(["dream", str(run_dir), "--agent", agent, "--steps", str(steps)]) == 0
    acc = EventAccumulator(str(run_dir / "dream"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    video = acc.Images(f"dream/{agent}")[-1]
    frames = list(ImageSequence.Iterator(Image.open(io.BytesIO(video.encoded_image_string))))
    assert len(frames) > 1
    if agent == "random":  # one episode of 200 steps finished, then a second began
        assert len(acc.Scalars("dream/random_return")) >= 1


def test_wm_dream_refuses_an_unknown_agent(run_dir: Path, capsys) -> None:
    assert main(["dream", str(run_dir), "--agent", "ppo"]) == 2
    assert "unknown agent" in capsys.readouterr().err


def test_sac_example_trains_inside_the_model(run_dir: Path) -> None:
    pytest.importorskip("stable_baselines3")
    spec = importlib.util.spec_from_file_location("sac_in_dream", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main([str(run_dir), "--steps", "200"]) == 0
