"""Evaluation of agents on real episodes: returns on held-out seeds, model exploitation, `wm mpc`.

Evaluation episodes run on their own env and seeds (offset by `EVAL_SEED_OFFSET`), are not
training data and are not counted in a run's env-step budget.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from agents.app.runs.folder import (
    DATA_FILE,
    LoadedModel,
    load_policy_modules,
    load_world_model,
    model_stats,
)
from agents.configurator.assemble import (
    PolicyParts,
    build_agent,
    build_penalty,
    build_policy_parts,
    penalty_horizon,
    resolve_device,
)
from agents.configurator.validate import check_seed
from agents.policy import PolicyAgent
from envs import Task
from worldmodel.cost.trajectory import TrajectoryCost
from worldmodel.data.rollout import run_episode
from worldmodel.data.store import EpisodeStore
from worldmodel.errors import ConfigError
from worldmodel.types import Actor

EVAL_SEED_OFFSET = 1_000_000


def evaluate(agent: Actor, task: Task, episodes: int, seed: int) -> list[float]:
    """Returns of `episodes` fresh episodes of `agent`, on seeds no training episode uses."""
    env = task.make_env(seed=seed + EVAL_SEED_OFFSET)
    returns = []
    for i in range(episodes):
        agent.reset()
        returns.append(run_episode(env, agent.act, seed=seed + EVAL_SEED_OFFSET + i).episode_return)
    env.close()
    return returns


def imagination_gap(parts: PolicyParts, task: Task, episodes: int, seed: int) -> float:
    """Model exploitation: the policy's imagined H-step return minus its real H-step return,
    averaged over the H-step windows of `episodes` real eval episodes (positive: the model
    promises more than the env gives).

    Every window starts from a state the policy really reached, so the measure covers the states
    its behaviour leads to, not only the start states: that is where a policy that exploits the
    model's errors goes. Windows run to the episode's end only where it terminated (the model's
    termination then ends the imagined one too); a time limit leaves a last window cut short,
    which is skipped.
    """
    env = task.make_env(seed=seed + EVAL_SEED_OFFSET)
    agent, horizon = PolicyAgent(parts.policy), parts.policy_learner.horizon
    starts, real = [], []
    for i in range(episodes):
        store = EpisodeStore(task.obs_dim, task.act_dim)
        run_episode(env, agent.act, seed=seed + EVAL_SEED_OFFSET + i, store=store)
        rewards, steps = store.data["reward"], len(store)
        ends_in_termination = bool(store.data["terminated"][-1])
        for t in range(0, steps, horizon):
            if t + horizon <= steps or ends_in_termination:
                starts.append(store.data["obs"][t])
                real.append(float(rewards[t : t + horizon].sum()))
    env.close()
    device = parts.policy_learner.device
    real_return = TrajectoryCost(task.cost, task.terminated)
    with torch.no_grad():
        imagined = parts.policy_learner.imagine(torch.from_numpy(np.stack(starts)).to(device))
        imagined_return = -real_return(imagined).total
    return float(imagined_return.mean()) - float(np.mean(real))


def load_agent(run_dir: Path, device: torch.device) -> tuple[LoadedModel, Actor]:
    """The trained agent of `run_dir` as its config builds it: policy and critic restored, the
    uncertainty penalty calibrated on the run's data where the agent pays it."""
    loaded = load_world_model(run_dir, device)
    config, model, task = loaded.config, loaded.model, loaded.task
    penalty = build_penalty(config.policy, model)
    horizon = penalty_horizon(config)
    if horizon:
        store = EpisodeStore.load(
            Path(run_dir) / DATA_FILE, obs_dim=task.obs_dim, act_dim=task.act_dim
        )
        if not penalty.calibrate_from(store, horizon, np.random.default_rng(config.seed)):
            raise ConfigError(f"the run's data has no episode of {horizon} steps to calibrate on")
    parts = None
    if config.agent != "mpc":
        parts = build_policy_parts(config, task, model, model_stats(model), model.device, penalty)
        load_policy_modules(parts, loaded.groups)
    return loaded, build_agent(config, task, model, model.device, parts, penalty)


def mpc(run_dir: Path, episodes: int, device: str = "auto", seed: int = 0) -> list[float]:
    """Run the trained agent of `run_dir` for `episodes` episodes and print the returns."""
    if episodes <= 0:
        raise ConfigError(f"episodes must be positive, got {episodes}")
    loaded, agent = load_agent(run_dir, resolve_device(device))
    check_seed(seed)  # before any episode: gymnasium refuses a negative seed with a traceback
    start = time.perf_counter()
    returns = evaluate(agent, loaded.task, episodes, seed)
    print(
        f"{loaded.task.id}: mean return {np.mean(returns):.1f} over {episodes} episodes "
        f"({', '.join(f'{r:.1f}' for r in returns)}) in {time.perf_counter() - start:.0f}s"
    )
    return returns
