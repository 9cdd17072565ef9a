"""The model-based loop of `wm run`: random seed steps, then act by MPC, record, retrain, evaluate.

Every real step taken counts towards the budget (random ones included); evaluation episodes run
on their own env and seeds, are not training data, and are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.config import Config
from agents.configurator import (
    PolicyParts,
    build_agent,
    build_model,
    build_policy_parts,
    build_trainer,
    check_for_task,
    resolve_device,
    set_threads,
)
from agents.evaluation import Agent, evaluate, imagination_gap
from agents.inspection import inspect_model, log_config, log_hparams, log_plan_vs_real
from agents.loop_state import (
    Learners,
    LoopState,
    check_resumable,
    restore,
    snapshot,
)
from agents.mpc import MPCAgent
from agents.policy import PolicyAgent
from agents.run_folder import (
    CHECKPOINT_FILE,
    DATA_FILE,
    load_config,
    new_run_dir,
    policy_modules,
    save_config,
    save_world_model,
)
from envs import Task, make_task
from worldmodel.checkpoint import (
    load_checkpoint,
)
from worldmodel.data import EpisodeStore
from worldmodel.errors import CheckpointError, ConfigError, TrainingDivergedError
from worldmodel.logger import Logger
from worldmodel.rollout import EpisodeResult, collect, random_policy, run_episode
from worldmodel.train import ModelTrainer


@dataclass
class EpisodeTrace:
    """Per-step planner records of one episode, to compare predictions with what happened."""

    planned: list[float] = field(default_factory=list)  #: predicted cost of each whole plan
    planned_step: list[float] = field(default_factory=list)  #: predicted cost of each first step
    seconds: list[float] = field(default_factory=list)  #: wall time of each decision
    fallbacks: int = 0  #: decisions where planning failed and the safe action was used

    def record(self, agent: MPCAgent) -> None:
        assert agent.last is not None
        self.planned.append(agent.last.planned_cost)
        self.planned_step.append(agent.last.planned_step_cost)
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
    loop = config.loop
    check_for_task(config, task, "run")
    if loop.seed_steps > config.steps:
        raise ConfigError(
            f"loop.seed_steps {loop.seed_steps} exceeds the budget {config.steps}; "
            "lower --loop.seed_steps or raise --steps"
        )
    device = resolve_device(config.device)
    set_threads(config.threads)
    torch.manual_seed(config.seed)
    run_dir = new_run_dir(config)
    save_config(run_dir, config)
    return _loop(config, task, device, run_dir, None)


def resume(run_dir: Path) -> Path:
    """Continue the `wm run` of `run_dir` from its checkpoint to its `config.steps`.

    The run's config.json is read, never rewritten; data.npz may be one episode newer than the
    checkpoint (it is written first), and its extra episode is dropped. A finished run is left
    as it is.
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    task = make_task(config.env)
    device = resolve_device(config.device)
    groups, meta = load_checkpoint(run_dir / CHECKPOINT_FILE, device="cpu")
    state = check_resumable(run_dir, config, task, meta)
    if state.steps >= config.steps:
        print(f"{run_dir} is already complete ({state.steps} env steps); nothing to resume")
        return run_dir
    store = EpisodeStore.load(
        run_dir / DATA_FILE,
        capacity=config.loop.capacity,
        obs_dim=task.obs_dim,
        act_dim=task.act_dim,
    )
    if store.next_episode < state.episode:
        raise CheckpointError(
            f"data file {run_dir / DATA_FILE} holds {store.next_episode} episodes but the "
            f"checkpoint counts {state.episode}; the data is older than the checkpoint: restore "
            "the run's own data.npz or start anew"
        )
    store.drop_newer(state.episode)
    set_threads(config.threads)
    learners = _build_learners(config, task, store, device)
    restore(learners, groups, meta, run_dir)  # every check passes before anything is written
    for name in (DATA_FILE, CHECKPOINT_FILE):  # leftovers of a write the crash interrupted
        for stale in run_dir.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    return _loop(config, task, device, run_dir, (store, state, learners))


def _loop(
    config: Config,
    task: Task,
    device: torch.device,
    run_dir: Path,
    restored: tuple[EpisodeStore, LoopState, Learners] | None,
) -> Path:
    """The loop body shared by a fresh run (`restored` None) and a resumed one."""
    loop = config.loop
    logger = Logger(run_dir)
    if restored is None:
        log_config(logger, config)
    env = task.make_env(seed=config.seed)
    bar = tqdm(total=config.steps, desc=f"wm run {task.id}", disable=not config.progress)
    try:
        if restored is None:
            store = EpisodeStore(task.obs_dim, task.act_dim, capacity=loop.capacity)
            seed_results = collect(
                env, random_policy(env, config.seed), loop.seed_steps, store, config.seed
            )
            state = LoopState(steps=loop.seed_steps, episode=len(seed_results), iteration=0)
            for result in seed_results:
                logger.scalars({"charts/episodic_return": result.episode_return}, state.steps)
            learners = _build_learners(config, task, store, device)
            bar.update(state.steps)
            _iterate(config, task, device, run_dir, store, state, learners, logger, bar)
        else:
            store, state, learners = restored
            bar.update(state.steps)
            print(f"resuming {run_dir} at {state.steps} of {config.steps} env steps", flush=True)
        while state.steps < config.steps:
            result, trace = _episode(
                env,
                learners.collector,
                store,
                config.seed + state.episode,
                config.steps - state.steps,
            )
            state.steps, state.episode = state.steps + result.length, state.episode + 1
            bar.update(result.length)
            bar.set_postfix(ret=f"{result.episode_return:.1f}")
            _log_episode(logger, result, trace, store, learners.collector, state.steps)
            logger.flush()
            _iterate(config, task, device, run_dir, store, state, learners, logger, bar)
    finally:
        bar.close()
        env.close()
        logger.close()
    print(f"run folder: {run_dir}")
    return run_dir


def _build_learners(
    config: Config, task: Task, store: EpisodeStore, device: torch.device
) -> Learners:
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
    return Learners(model, trainer, parts, agent, collector, np.random.default_rng(config.seed))


def _iterate(
    config: Config,
    task: Task,
    device: torch.device,
    run_dir: Path,
    store: EpisodeStore,
    state: LoopState,
    learners: Learners,
    logger: Logger,
    bar: tqdm,
) -> None:
    """Retrain, (maybe) evaluate and inspect, then checkpoint: data first, then the rest."""
    loop, parts, trainer = config.loop, learners.parts, learners.trainer
    try:
        fit = _retrain(trainer, store, config, logger, first=state.iteration == 0)
    except TrainingDivergedError:
        # fit restored the best weights: keep them and the data, so the run stays usable.
        store.save(run_dir / DATA_FILE)
        save_world_model(
            run_dir / CHECKPOINT_FILE,
            config,
            task,
            learners.model,
            extra=policy_modules(parts),
            env_steps=state.steps,
            diverged=True,
        )
        raise
    logger.scalars({"charts/model_fit_seconds": fit}, state.steps)
    if parts is not None:
        logger.scalars(train_policy(parts, store, config, learners.policy_rng, device), state.steps)
    state.iteration += 1
    last = state.steps >= config.steps
    if last or state.iteration % loop.eval_every == 0:
        # The same start states at every evaluation (and for the benchmarks' baselines): how
        # hard a start state is (Pendulum's returns span -0 to -350 by start alone) must not
        # masquerade as progress or regress between evaluations.
        seed = config.seed
        returns = evaluate(learners.agent, task, loop.eval_episodes, seed)
        logger.scalars({"charts/eval_return": float(np.mean(returns))}, state.steps)
        if parts is not None:
            gap = imagination_gap(parts, task, loop.eval_episodes, seed)
            logger.scalars({"policy/imagined_minus_real_return": gap}, state.steps)
        bar.set_postfix(eval=f"{np.mean(returns):.1f}")
        if last:
            final = {"eval_return": float(np.mean(returns)), "env_steps": float(state.steps)}
            log_hparams(logger, config, final, state.steps)
    if last or state.iteration % loop.video_every == 0:
        inspect_model(
            logger, task, learners.model, store, state.steps, video=config.video, seed=config.seed
        )
    logger.flush()
    # data.npz first: a crash between the two writes leaves data one episode ahead of the
    # checkpoint, which `resume` trims; the other order would lose an episode's data.
    store.save(run_dir / DATA_FILE)
    groups, resume_meta = snapshot(learners, state)
    save_world_model(
        run_dir / CHECKPOINT_FILE,
        config,
        task,
        learners.model,
        extra=policy_modules(parts) | groups,
        env_steps=state.steps,
        iteration=state.iteration,
        model_steps=trainer.total_steps,
        resume=resume_meta,
    )


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
        log_plan_vs_real(logger, np.array(trace.planned_step), realised_costs, steps)
    logger.scalars(metrics, steps)
