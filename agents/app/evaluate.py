"""Evaluation of agents on real episodes: returns on held-out seeds, model exploitation, `wm mpc`.

Evaluation episodes run on their own env and seeds (offset by `EVAL_SEED_OFFSET`), are not
training data and are not counted in a run's env-step budget.
"""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
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
from worldmodel.cost.intrinsic import IntrinsicCost
from worldmodel.cost.trajectory import TrajectoryCost
from worldmodel.data.rollout import run_episode, run_episodes
from worldmodel.data.store import EpisodeStore
from worldmodel.errors import ConfigError
from worldmodel.types import Actor

EVAL_SEED_OFFSET = 1_000_000


def evaluate(agent: Actor, task: Task, episodes: int, seed: int, envs: int = 1) -> list[float]:
    """Returns of `episodes` fresh episodes of `agent`, on seeds no training episode uses.

    With `envs` > 1 and an agent that plans for several envs at once (`act_batch`), up to
    `envs` episodes run side by side in a gymnasium vector env, one batched decision per step
    for all of them; episode i has the same seed either way.
    """
    if envs > 1 and hasattr(agent, "act_batch"):
        return _evaluate_batched(agent, task, episodes, seed, min(envs, episodes))
    env = task.make_env(seed=seed + EVAL_SEED_OFFSET)
    returns = []
    for i in range(episodes):
        agent.reset()
        returns.append(run_episode(env, agent.act, seed=seed + EVAL_SEED_OFFSET + i).episode_return)
    env.close()
    return returns


def _evaluate_batched(agent: Actor, task: Task, episodes: int, seed: int, n: int) -> list[float]:
    """`evaluate` on a `SyncVectorEnv` of n envs (`run_episodes`): a finished env starts the
    next episode (its own seed) or, when none is left, idles and is no longer planned for."""
    vec = vector_env(task, n)
    seeds = [seed + EVAL_SEED_OFFSET + i for i in range(episodes)]
    agent.reset()
    reset_env = agent.reset_envs  # type: ignore[attr-defined]
    results = run_episodes(vec, agent.act_batch, seeds, on_end=lambda e: reset_env([e]))  # type: ignore[attr-defined]
    vec.close()
    return [r.episode_return for r in results]


def vector_env(task: Task, n: int) -> gym.vector.SyncVectorEnv:
    """n of the task's envs side by side, reset by `run_episodes` (no autoreset)."""
    return gym.vector.SyncVectorEnv(
        [task.make_env for _ in range(n)], autoreset_mode=gym.vector.AutoresetMode.DISABLED
    )


def imagination_gap(
    parts: PolicyParts, task: Task, episodes: int, seed: int, costs: IntrinsicCost | None = None
) -> float:
    """Model exploitation: the policy's imagined H-step return minus its real H-step return,
    averaged over the H-step windows of `episodes` real eval episodes (positive: the model
    promises more than the env gives).

    Every window starts from a state the policy really reached, so the measure covers the states
    its behaviour leads to, not only the start states: that is where a policy that exploits the
    model's errors goes. Windows run to the episode's end only where it terminated (the model's
    termination then ends the imagined one too); a time limit leaves a last window cut short,
    which is skipped. The imagined return is paid by `costs` (None: the task's exact cost).
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
    if costs is None:
        if task.cost is None:
            raise ConfigError(f"{task.id} has no exact cost; pass the run's learned one as costs")
        costs = IntrinsicCost(task.cost, task.cost, task.terminated)
    real_return = TrajectoryCost(costs.cost, costs.terminated)
    with torch.no_grad():
        imagined = parts.policy_learner.imagine(torch.from_numpy(np.stack(starts)).to(device))
        imagined_return = -real_return(imagined).total
    return float(imagined_return.mean()) - float(np.mean(real))


def load_agent(run_dir: Path, device: torch.device) -> tuple[LoadedModel, Actor]:
    """The trained agent of `run_dir` as its config builds it: policy and critic restored, the
    uncertainty penalty calibrated on the run's data where the agent pays it."""
    loaded = load_world_model(run_dir, device)
    config, model, task, costs = loaded.config, loaded.model, loaded.task, loaded.costs
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
        stats = model_stats(model)
        parts = build_policy_parts(config, task, model, stats, model.device, penalty, costs)
        load_policy_modules(parts, loaded.groups)
    return loaded, build_agent(config, task, model, model.device, parts, penalty, costs)


def mpc(
    run_dir: Path, episodes: int, device: str = "auto", seed: int = 0, envs: int = 1
) -> list[float]:
    """Run the trained agent of `run_dir` for `episodes` episodes (up to `envs` side by side)
    and print the returns."""
    if episodes <= 0 or envs <= 0:
        raise ConfigError(f"episodes and envs must be positive, got {episodes} and {envs}")
    loaded, agent = load_agent(run_dir, resolve_device(device))
    check_seed(seed)  # before any episode: gymnasium refuses a negative seed with a traceback
    start = time.perf_counter()
    returns = evaluate(agent, loaded.task, episodes, seed, envs=envs)
    print(
        f"{loaded.task.id}: mean return {np.mean(returns):.1f} over {episodes} episodes "
        f"({', '.join(f'{r:.1f}' for r in returns)}) in {time.perf_counter() - start:.0f}s"
    )
    return returns
