"""Evaluation of agents on real episodes: returns on held-out seeds, model exploitation, `wm mpc`.

Evaluation episodes run on their own env and seeds (offset by `EVAL_SEED_OFFSET`), are not
training data and are not counted in a run's env-step budget.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from agents.configurator import PolicyParts, build_agent, build_policy_parts, resolve_device
from agents.mpc import MPCAgent
from agents.policy import PolicyAgent
from agents.run_folder import load_policy_modules, load_world_model, model_stats
from envs import Task
from worldmodel.data import EpisodeStore
from worldmodel.errors import ConfigError
from worldmodel.rollout import run_episode

EVAL_SEED_OFFSET = 1_000_000
Agent = MPCAgent | PolicyAgent


def evaluate(agent: Agent, task: Task, episodes: int, seed: int) -> list[float]:
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
    with torch.no_grad():
        traj, _, alive = parts.policy_learner.imagine(torch.from_numpy(np.stack(starts)).to(device))
        rewards = -task.cost(traj.states[:-1], traj.actions, traj.states[1:]) * alive[:-1]
    return float(rewards.sum(0).mean()) - float(np.mean(real))


def mpc(run_dir: Path, episodes: int, device: str = "auto", seed: int = 0) -> list[float]:
    """Run the trained agent of `run_dir` for `episodes` episodes and print the returns."""
    if episodes <= 0:
        raise ConfigError(f"episodes must be positive, got {episodes}")
    loaded = load_world_model(run_dir, resolve_device(device))
    config, model = loaded.config, loaded.model
    parts = None
    if config.agent != "mpc":
        parts = build_policy_parts(config, loaded.task, model, model_stats(model), model.device)
        load_policy_modules(parts, loaded.groups)
    agent = build_agent(config, loaded.task, model, model.device, parts)
    start = time.perf_counter()
    returns = evaluate(agent, loaded.task, episodes, seed)
    print(
        f"{loaded.task.id}: mean return {np.mean(returns):.1f} over {episodes} episodes "
        f"({', '.join(f'{r:.1f}' for r in returns)}) in {time.perf_counter() - start:.0f}s"
    )
    return returns
