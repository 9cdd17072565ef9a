"""The model-based loop of `wm run`: random seed steps, then act by MPC, record, retrain, evaluate.

Every real step taken counts towards the budget (random ones included); evaluation episodes run
on their own env and seeds, are not training data, and are not counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.config import Config
from agents.configurator import (
    CHECKPOINT_FILE,
    DATA_FILE,
    PolicyParts,
    build_agent,
    build_model,
    build_policy_parts,
    build_trainer,
    check_for_task,
    load_policy_modules,
    load_world_model,
    model_stats,
    new_run_dir,
    policy_modules,
    resolve_device,
    save_config,
    save_world_model,
    set_threads,
)
from agents.inspection import inspect_model, log_config
from agents.mpc import MPCAgent
from agents.policy import PolicyAgent
from envs import Task, make_task
from worldmodel.data import EpisodeStore
from worldmodel.errors import ConfigError, TrainingDivergedError
from worldmodel.logger import Logger
from worldmodel.rollout import EpisodeResult, collect, random_policy, run_episode
from worldmodel.train import ModelTrainer

EVAL_SEED_OFFSET = 1_000_000
Agent = MPCAgent | PolicyAgent


@dataclass
class EpisodeTrace:
    """Per-step planner records of one episode, to compare predictions with what happened."""

    planned: list[float] = field(default_factory=list)  #: predicted cost of each whole plan
    seconds: list[float] = field(default_factory=list)  #: wall time of each decision
    fallbacks: int = 0  #: decisions where planning failed and the safe action was used

    def record(self, agent: MPCAgent) -> None:
        assert agent.last is not None
        self.planned.append(agent.last.planned_cost)
        self.seconds.append(agent.last.seconds)
        self.fallbacks += agent.last.fallback


def planned_vs_realised(
    planned: list[float], costs: np.ndarray, horizon: int
) -> tuple[float, float]:
    """Mean predicted plan cost and mean realised cost over the same `horizon` steps that followed.

    Only decisions with `horizon` real steps after them count; (nan, nan) if there are none.
    """
    n = len(costs) - horizon + 1
    if n <= 0:
        return float("nan"), float("nan")
    realised = np.convolve(costs, np.ones(horizon), mode="valid")[:n]
    return float(np.mean(planned[:n])), float(np.mean(realised))


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
    from the same start states (the eval episodes' first states), averaged."""
    env = task.make_env(seed=seed + EVAL_SEED_OFFSET)
    agent, horizon = PolicyAgent(parts.policy), parts.policy_learner.horizon
    starts, real = [], []
    for i in range(episodes):
        store = EpisodeStore(task.obs_dim, task.act_dim)
        run_episode(
            env, agent.act, seed=seed + EVAL_SEED_OFFSET + i, store=store, max_steps=horizon
        )
        starts.append(store.data["obs"][0])
        real.append(float(store.data["reward"].sum()))
    env.close()
    device = parts.policy_learner.device
    with torch.no_grad():
        traj, _, alive = parts.policy_learner.imagine(torch.from_numpy(np.stack(starts)).to(device))
        rewards = -task.cost(traj.states[:-1], traj.actions, traj.states[1:]) * alive[:-1]
    return float(rewards.sum(0).mean()) - float(np.mean(real))


def train_policy(
    parts: PolicyParts,
    store: EpisodeStore,
    config: Config,
    rng: np.random.Generator,
    device: torch.device,
) -> dict[str, float]:
    """Recalibrate the uncertainty penalty on real data, then policy and critic updates."""
    pc = config.policy
    if pc.uncertainty_weight > 0:
        if len(store.window_starts(pc.horizon)) == 0:
            return {}  # no real episode is as long as H yet: nothing to calibrate against
        parts.penalty.calibrate(store.sample(512, pc.horizon, rng).to(device))
    metrics: dict[str, list[float]] = {}
    obs = store.data["obs"]
    for _ in range(pc.updates):
        starts = torch.from_numpy(obs[rng.integers(len(obs), size=pc.batch_size)]).to(device)
        policy_metrics = parts.policy_learner.update(starts)
        rollout = parts.policy_learner.last_rollout
        critic_metrics = (
            parts.critic_learner.update_imagined(rollout.states, rollout.costs, rollout.continues)
            if rollout is not None
            else {}
        )
        for prefix, values in (("policy", policy_metrics), ("critic", critic_metrics)):
            for key, value in values.items():
                metrics.setdefault(f"{prefix}/{key}", []).append(value)
    return {key: float(np.mean(values)) for key, values in metrics.items()}


def run(config: Config) -> Path:
    """Run the loop until `config.steps` real env steps; returns the run folder."""
    task = make_task(config.env)
    device = resolve_device(config.device)
    set_threads(config.threads)
    torch.manual_seed(config.seed)
    loop = config.loop
    check_for_task(config, task, "run")
    if loop.seed_steps > config.steps:
        raise ConfigError(
            f"loop.seed_steps {loop.seed_steps} exceeds the budget {config.steps}; "
            "lower --loop.seed_steps or raise --steps"
        )
    run_dir = new_run_dir(config)
    save_config(run_dir, config)
    logger = Logger(run_dir)
    log_config(logger, config)
    env = task.make_env(seed=config.seed)
    store = EpisodeStore(task.obs_dim, task.act_dim, capacity=loop.capacity)
    bar = tqdm(total=config.steps, desc=f"wm run {task.id}", disable=not config.progress)
    try:
        seed_results = collect(
            env, random_policy(env, config.seed), loop.seed_steps, store, config.seed
        )
        steps, episode = loop.seed_steps, len(seed_results)
        for result in seed_results:
            logger.scalars({"charts/episodic_return": result.episode_return}, steps)
        bar.update(steps)
        model = build_model(config.model, task.obs_dim, task.act_dim)
        model.set_normalization(store.stats())
        model.to(device)
        trainer = build_trainer(config.train, model, config.seed)
        parts = (
            build_policy_parts(config, task, model, store.stats(), device)
            if config.agent != "mpc"
            else None
        )
        agent = build_agent(config, task, model, device, parts)
        collector = (
            PolicyAgent(parts.policy, noise=config.policy.noise, seed=config.seed)
            if parts is not None and config.agent == "policy"
            else agent
        )
        policy_rng = np.random.default_rng(config.seed)
        iteration = 0
        while True:
            try:
                fit = _retrain(trainer, store, config, logger, first=iteration == 0)
            except TrainingDivergedError:
                # fit restored the best weights: keep them and the data, so the run stays usable.
                store.save(run_dir / DATA_FILE)
                save_world_model(
                    run_dir / CHECKPOINT_FILE,
                    config,
                    task,
                    model,
                    extra=policy_modules(parts),
                    env_steps=steps,
                    diverged=True,
                )
                raise
            logger.scalars({"charts/model_fit_seconds": fit}, steps)
            if parts is not None:
                logger.scalars(train_policy(parts, store, config, policy_rng, device), steps)
            iteration += 1
            last = steps >= config.steps
            if last or iteration % loop.eval_every == 0:
                returns = evaluate(agent, task, loop.eval_episodes, config.seed + iteration)
                logger.scalars({"charts/eval_return": float(np.mean(returns))}, steps)
                if parts is not None:
                    gap = imagination_gap(parts, task, loop.eval_episodes, config.seed + iteration)
                    logger.scalars({"policy/imagined_minus_real_return": gap}, steps)
                bar.set_postfix(eval=f"{np.mean(returns):.1f}")
            if last or iteration % loop.video_every == 0:
                inspect_model(
                    logger, task, model, store, steps, video=config.video, seed=config.seed
                )
            store.save(run_dir / DATA_FILE)
            save_world_model(
                run_dir / CHECKPOINT_FILE,
                config,
                task,
                model,
                extra=policy_modules(parts),
                env_steps=steps,
                iteration=iteration,
                model_steps=trainer.total_steps,
            )
            if last:
                break
            result, trace = _episode(
                env, collector, store, config.seed + episode, config.steps - steps
            )
            steps, episode = steps + result.length, episode + 1
            bar.update(result.length)
            bar.set_postfix(ret=f"{result.episode_return:.1f}")
            _log_episode(logger, result, trace, store, collector, steps)
            logger.flush()
    finally:
        bar.close()
        env.close()
        logger.close()
    print(f"run folder: {run_dir}")
    return run_dir


def _retrain(
    trainer: ModelTrainer, store: EpisodeStore, config: Config, logger: Logger, first: bool
) -> float:
    """Warm-started fit on everything collected so far; the first fit gets the full step budget."""
    train_set, val_set = (
        store.split(config.train.val_fraction, config.seed)
        if store.num_episodes > 1
        else (store, store)
    )
    result = trainer.fit(
        train_set,
        val_set,
        horizon=config.train.horizon,
        batch_size=config.train.batch_size,
        max_steps=config.loop.first_train_steps if first else config.loop.train_steps,
        eval_every=min(config.train.eval_every, config.loop.train_steps),
        patience=config.train.patience,
        log=logger.scalars,
        progress=False,
    )
    return result.seconds


def _episode(
    env, agent: Agent, store: EpisodeStore, seed: int, max_steps: int
) -> tuple[EpisodeResult, EpisodeTrace | None]:
    """One training episode, with the planner's records when the agent plans."""
    agent.reset()
    if not isinstance(agent, MPCAgent):
        return run_episode(env, agent.act, seed=seed, store=store, max_steps=max_steps), None
    trace = EpisodeTrace()

    def act(obs: np.ndarray) -> np.ndarray:
        action = agent.act(obs)
        trace.record(agent)
        return action

    return run_episode(env, act, seed=seed, store=store, max_steps=max_steps), trace


def _log_episode(
    logger: Logger,
    result: EpisodeResult,
    trace: EpisodeTrace | None,
    store: EpisodeStore,
    agent: Agent,
    steps: int,
) -> None:
    metrics = {
        "charts/episodic_return": result.episode_return,
        "charts/episodic_length": float(result.length),
    }
    if trace is not None and isinstance(agent, MPCAgent):
        realised_costs = -store.data["reward"][-result.length :]
        horizon = agent.planner.horizon
        planned, realised = planned_vs_realised(trace.planned, realised_costs, horizon)
        metrics |= {
            "charts/planner_ms_per_action": 1000 * float(np.mean(trace.seconds)),
            "charts/planned_cost": planned,
            "charts/realised_cost": realised,
            "charts/planner_fallbacks": float(trace.fallbacks),
        }
    logger.scalars(metrics, steps)


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
