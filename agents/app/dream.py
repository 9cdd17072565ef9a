"""The learned simulator of a run folder, as a gymnasium env, and `wm dream`.

`register_dream_env()` registers `worldmodel/Dream-v0` with gymnasium:

    from agents.app.dream import register_dream_env
    register_dream_env()
    env = gymnasium.make("worldmodel/Dream-v0", run_dir="runs/Pendulum-v1__train__0__...")

(`make_dream_env(run_dir)` builds the same env without the registry). Episodes start
from the first states of the run's recorded episodes, i.e. the real env's start distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from agents.app.evaluate import load_agent
from agents.app.media.inspection import MAX_FPS
from agents.app.media.logger import Logger
from agents.app.runs.folder import DATA_FILE, LoadedModel, load_world_model
from agents.configurator.assemble import resolve_device
from agents.configurator.validate import check_seed
from envs.render import make_renderer
from worldmodel.data.store import EpisodeStore
from worldmodel.errors import ConfigError
from worldmodel.simulator import BatchedWorldModelEnv, WorldModelEnv

DREAM_ID = "worldmodel/Dream-v0"
AGENTS = ("random", "mpc")
MAX_VIDEO_FRAMES = 500
"""Longer dreams are filmed for their first frames only (a GIF holds every frame)."""


def start_states(store: EpisodeStore) -> np.ndarray:
    """First state of every episode in `store`, [E, S]."""
    episode = store.data["episode"]
    if not len(episode):
        raise ConfigError("the run's data has no episodes to start a dream from")
    first = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
    return store.data["obs"][first]


def _load(run_dir: str | Path, device: str) -> tuple[LoadedModel, np.ndarray]:
    """The run's model and its start states [E, S]."""
    loaded = load_world_model(Path(run_dir), resolve_device(device))
    task = loaded.task
    store = EpisodeStore.load(Path(run_dir) / DATA_FILE, obs_dim=task.obs_dim, act_dim=task.act_dim)
    return loaded, start_states(store)


def _env(
    loaded: LoadedModel,
    starts: np.ndarray,
    max_episode_steps: int | None,
    render_mode: str | None = None,
) -> WorldModelEnv:
    task = loaded.task
    renderer = make_renderer(task) if render_mode == "rgb_array" else None
    if render_mode == "rgb_array" and renderer is None:
        raise ConfigError(f"cannot render {task.id} here; make the env without render_mode")
    return WorldModelEnv(
        loaded.model,
        loaded.costs.cost,
        starts,
        terminated=loaded.costs.terminated,
        max_episode_steps=max_episode_steps or task.max_episode_steps,
        renderer=renderer,
        render_mode=render_mode,
    )


def make_dream_env(
    run_dir: str | Path,
    *,
    device: str = "cpu",
    max_episode_steps: int | None = None,
    render_mode: str | None = None,
) -> WorldModelEnv:
    """WorldModelEnv of the model in `run_dir`, with the run's cost and termination (the task's
    exact ones, or those learned beside the model) and the task's time limit.

    `max_episode_steps` defaults to the task's. render_mode 'rgb_array' needs offscreen rendering
    (EGL or OSMesa for MuJoCo tasks); where none works it is an error.
    """
    return _env(*_load(run_dir, device), max_episode_steps, render_mode)


def make_batched_dream_env(
    run_dir: str | Path,
    num_envs: int,
    *,
    seed: int | None = None,
    device: str = "cpu",
    max_episode_steps: int | None = None,
) -> BatchedWorldModelEnv:
    """`num_envs` copies of the learned simulator of `run_dir`, stepped together in torch."""
    loaded, starts = _load(run_dir, device)
    task = loaded.task
    return BatchedWorldModelEnv(
        loaded.model,
        loaded.costs.cost,
        starts,
        num_envs,
        terminated=loaded.costs.terminated,
        seed=seed,
        max_episode_steps=max_episode_steps or task.max_episode_steps,
    )


def register_dream_env() -> str:
    """Register `make_dream_env` as gymnasium id `worldmodel/Dream-v0` (idempotent); returns it.

    Registering is a side effect on gymnasium's global registry, so it is a call, not an import.
    """
    if DREAM_ID not in gym.registry:
        gym.register(DREAM_ID, entry_point=make_dream_env)
    return DREAM_ID


@dataclass(frozen=True)
class DreamResult:
    """What `dream` did."""

    returns: list[float]  #: return of each finished episode, in order
    steps: int  #: simulated steps taken
    video: bool  #: whether a video was logged


def dream(
    run_dir: str | Path,
    *,
    agent: str = "random",
    steps: int = 200,
    seed: int = 0,
    video: bool = True,
    device: str = "cpu",
) -> DreamResult:
    """Run `agent` ('random' or 'mpc', the run's planner) for `steps` steps in the learned model.

    Logs the episode returns and a video of the dream to `run_dir/dream` (video skipped, with a
    warning, where offscreen rendering does not work).
    """
    if agent not in AGENTS:
        raise ConfigError(f"unknown agent {agent!r}; choose one of {', '.join(AGENTS)}")
    if steps <= 0:
        raise ConfigError(f"steps must be positive, got {steps}")
    check_seed(seed)
    loaded, starts = _load(run_dir, device)
    env = _env(loaded, starts, max_episode_steps=None)
    env.action_space.seed(seed)
    if agent == "mpc":
        _, actor = load_agent(Path(run_dir), loaded.model.device)
        policy, reset = actor.act, actor.reset
    else:
        policy, reset = (lambda _obs: env.action_space.sample()), (lambda: None)
    obs, _ = env.reset(seed=seed)
    states, returns, episode_return = [obs], [], 0.0
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        episode_return += reward
        states.append(obs)
        if terminated or truncated:
            returns.append(episode_return)
            episode_return = 0.0
            reset()
            obs, _ = env.reset()
            states.append(obs)
    env.close()

    renderer = make_renderer(loaded.task) if video else None
    logger = Logger(Path(run_dir) / "dream")
    try:
        for i, value in enumerate(returns):
            logger.scalars({f"dream/{agent}_return": value}, i)
        if renderer is not None:
            frames = renderer.render(np.stack(states[:MAX_VIDEO_FRAMES]))
            logger.video(f"dream/{agent}", frames, 0, fps=min(1 / loaded.task.dt, MAX_FPS))
    finally:
        logger.close()
        if renderer is not None:
            renderer.close()
    shown = ", ".join(f"{r:.1f}" for r in returns) or "none finished"
    print(f"dreamt {steps} steps with the {agent} agent; episode returns: {shown}")
    return DreamResult(returns=returns, steps=steps, video=renderer is not None)
