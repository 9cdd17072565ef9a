"""The model-based loop of `wm run`: random seed steps, then act by MPC, record, retrain, evaluate.

Every real step taken counts towards the budget (random ones included); evaluation episodes run
on their own env and seeds, are not training data, and are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.app.episodes import log_episode, run_round_traced
from agents.app.evaluate import evaluate, imagination_gap, vector_env
from agents.app.media.inspection import (
    cost_log,
    inspect_model,
    log_config,
    log_hparams,
    reward_error_metrics,
)
from agents.app.media.logger import Logger
from agents.app.runs.folder import (
    CHECKPOINT_FILE,
    DATA_FILE,
    cost_modules,
    new_run_dir,
    policy_modules,
    save_config,
    save_world_model,
)
from agents.app.runs.lock import run_folder_lock
from agents.app.runs.loop_state import Learners, LoopState, check_resumable, restore, snapshot
from agents.app.runs.resume import announce_restart, clear_interrupted_writes, resume_point
from agents.app.updates import StepUpdates, renormalize, train_policy
from agents.configurator.assemble import (
    build_agent,
    build_penalty,
    build_policy_parts,
    build_trainer,
    cost_schedule,
    fit_schedule,
    intrinsic_cost,
    learns_cost,
    new_learned_cost,
    new_world_model,
    penalty_horizon,
    resolve_device,
    set_threads,
)
from agents.configurator.config import Config
from agents.configurator.presets import check_for_task
from agents.policy import PolicyAgent
from envs import Task, make_task
from worldmodel.cost.evaluate import k_step_reward_errors
from worldmodel.cost.learned import CostStats
from worldmodel.data.rollout import collect, random_policy
from worldmodel.data.store import EpisodeStore
from worldmodel.errors import CheckpointError, TrainingDivergedError
from worldmodel.forward.fit import (
    FitSchedule,
    ModelTrainer,
    fit_world_model,
    split_episodes,
    validation_windows,
)


def run(config: Config) -> Path:
    """Run the loop until `config.steps` real env steps; returns the run folder."""
    task = make_task(config.env)
    check_for_task(config, task, "run")
    device = resolve_device(config.device)
    run_dir = new_run_dir(config)
    with run_folder_lock(run_dir):
        save_config(run_dir, config)
        return _fresh(config, task, device, run_dir)


def resume(run_dir: Path) -> Path:
    """Continue the `wm run` of `run_dir` from its checkpoint to its `config.steps`.

    The run's config.json is read, never rewritten; data.npz may be one episode newer than the
    checkpoint (it is written first), and its extra episode is dropped. A run stopped before its
    first checkpoint starts over in place; a finished run is left as it is.
    """
    run_dir = Path(run_dir)
    with run_folder_lock(run_dir):
        point = resume_point(run_dir, "run")
        config, task, device = point.config, point.task, point.device
        if point.checkpoint is None:
            announce_restart(run_dir)
            clear_interrupted_writes(run_dir)
            return _fresh(config, task, device, run_dir)
        restored = _restore(run_dir, config, task, device, *point.checkpoint)
        if restored is None:
            return run_dir
        clear_interrupted_writes(run_dir)
        return _loop(config, task, device, run_dir, restored)


def _fresh(config: Config, task: Task, device: torch.device, run_dir: Path) -> Path:
    """The loop from its first step: the same seeds whether new or started over in place."""
    set_threads(config.threads)
    torch.manual_seed(config.seed)
    return _loop(config, task, device, run_dir, None)


def _restore(
    run_dir: Path, config: Config, task: Task, device: torch.device, groups: dict, meta: dict
) -> tuple[EpisodeStore, LoopState, Learners] | None:
    """Data, counters and learners of the checkpoint (None: the run is complete); every check
    passes before anything is written."""
    state = check_resumable(run_dir, config, task, meta)
    if state.steps >= config.steps:
        print(f"{run_dir} is already complete ({state.steps} env steps); nothing to resume")
        return None
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
    restore(learners, groups, meta, run_dir)
    return store, state, learners


def _loop(
    config: Config,
    task: Task,
    device: torch.device,
    run_dir: Path,
    restored: tuple[EpisodeStore, LoopState, Learners] | None,
) -> Path:
    """The loop body shared by a fresh run (`restored` None) and a resumed one."""
    logger = Logger(run_dir)
    vec = vector_env(task, config.envs)
    bar = tqdm(total=config.steps, desc=f"wm run {task.id}", disable=not config.progress)
    try:
        if restored is None:
            log_config(logger, config)
            run = _seed_run(config, task, device, run_dir, logger, bar)
            run.iterate()
        else:
            run = _Run(config, task, run_dir, *restored, logger, bar)
            bar.update(run.state.steps)
            print(
                f"resuming {run_dir} at {run.state.steps} of {config.steps} env steps", flush=True
            )
        state, learners = run.state, run.learners
        while state.steps < config.steps:
            seeds = [config.seed + state.episode + i for i in range(config.envs)]
            budget = config.steps - state.steps
            on_step = None if run.updates is None else partial(_advance, run.updates, state.steps)
            try:
                episodes = run_round_traced(
                    vec, learners.collector, run.store, seeds, budget, on_step
                )
            except TrainingDivergedError:
                run.checkpoint(diverged=True)  # the weights and data so far stay usable
                raise
            rewards = run.store.data["reward"][-sum(r.length for r, _ in episodes) :]
            for result, trace in episodes:
                state.steps, state.episode = state.steps + result.length, state.episode + 1
                bar.update(result.length)
                bar.set_postfix(ret=f"{result.episode_return:.1f}")
                mine, rewards = rewards[: result.length], rewards[result.length :]
                horizon = learners.collector.horizon
                log_episode(logger, result, trace, mine, horizon, state.steps)
            logger.flush()
            run.iterate(len(episodes))
    finally:
        bar.close()
        vec.close()
        logger.close()
    print(f"run folder: {run_dir}")
    return run_dir


def _advance(updates: StepUpdates, base: int, taken: int) -> None:
    """The updates due after `taken` steps of a round that began at `base` env steps."""
    updates.advance(base + taken)


def _seed_run(
    config: Config,
    task: Task,
    device: torch.device,
    run_dir: Path,
    logger: Logger,
    bar: tqdm,
) -> _Run:
    """A new run after its random seed steps, with the learners built on their statistics."""
    loop = config.loop
    store = EpisodeStore(task.obs_dim, task.act_dim, capacity=loop.capacity)
    env = task.make_env(seed=config.seed)
    results = collect(env, random_policy(env, config.seed), loop.seed_steps, store, config.seed)
    env.close()
    state = LoopState(steps=loop.seed_steps, episode=len(results), iteration=0)
    for result in results:
        logger.scalars({"charts/episodic_return": result.episode_return}, state.steps)
    bar.update(state.steps)
    learners = _build_learners(config, task, store, device)
    return _Run(config, task, run_dir, store, state, learners, logger, bar)


def _build_learners(
    config: Config, task: Task, store: EpisodeStore, device: torch.device
) -> Learners:
    stats = store.stats()
    model = new_world_model(config.model, task, stats, device, config.seed)
    trainer = build_trainer(config.train, model, config.seed)
    learned = cost_trainer = None
    if learns_cost(config):
        cost_stats = CostStats.of(store)
        learned = new_learned_cost(config.cost_model, task, stats, cost_stats, device, config.seed)
        cost_trainer = build_trainer(config.train, learned, config.seed)
    costs = intrinsic_cost(config, task, learned)
    penalty = build_penalty(config.policy, model)
    parts = (
        build_policy_parts(config, task, model, stats, device, penalty, costs)
        if config.agent != "mpc"
        else None
    )
    agent = build_agent(config, task, model, device, parts, penalty, costs)
    collector = (
        PolicyAgent(parts.policy, noise=config.policy.noise, seed=config.seed)
        if parts is not None and config.agent == "policy"
        else agent
    )
    rng = np.random.default_rng(config.seed)
    return Learners(model, trainer, penalty, parts, agent, collector, rng, costs, cost_trainer)


@dataclass
class _Run:
    """One `wm run` in progress: what each round of retrain, evaluate, checkpoint works on."""

    config: Config
    task: Task
    run_dir: Path
    store: EpisodeStore
    state: LoopState
    learners: Learners
    logger: Logger
    bar: tqdm
    updates: StepUpdates | None = None  #: with `loop.update_every` > 0, those between steps

    def __post_init__(self) -> None:
        if self.config.loop.update_every and self.updates is None:
            self.updates = StepUpdates(self.config, self.learners, self.store, self.state.steps)

    def iterate(self, episodes: int = 1) -> None:
        """Retrain, (maybe) evaluate and inspect, then checkpoint: data first, then the rest.

        After a round of `episodes` episodes side by side, the updates of as many rounds of one
        (the same updates per env step), and the evaluations due in them."""
        config, state, learners = self.config, self.state, self.learners
        first = state.iteration == 0
        refits = self.updates is None or first  # else the updates between steps train
        if config.loop.renormalize and not first:
            renormalize(learners, self.store)
        if refits:
            self._refit(first, episodes)
        else:
            self.logger.scalars(self.updates.drain() | self._validation(), state.steps)
        horizon = penalty_horizon(config)
        calibrated = not horizon or learners.penalty.calibrate_from(
            self.store, horizon, learners.policy_rng
        )
        if learners.parts is not None and calibrated and refits:
            rng, updates = learners.policy_rng, config.policy.updates * episodes
            policy = train_policy(
                learners.parts, self.store, config.policy.batch_size, updates, rng
            )
            self.logger.scalars(policy, state.steps)
        before, state.iteration = state.iteration, state.iteration + episodes
        last = state.steps >= config.steps
        due = lambda every: state.iteration // every > before // every  # noqa: E731
        if last or due(config.loop.eval_every):
            self.evaluate(last)
        if last or due(config.loop.video_every):
            inspect_model(
                self.logger,
                self.task,
                learners.model,
                self.store,
                state.steps,
                video=config.video,
                seed=config.seed,
            )
        self.logger.flush()
        self.checkpoint()

    def _refit(self, first: bool, episodes: int) -> None:
        """The warm-started fits of the model and the learned cost after a round."""
        config, learners, steps = self.config, self.learners, self.state.steps
        try:
            fit = _retrain(learners.trainer, self.store, config, self.logger, first, episodes)
            self.logger.scalars({"charts/model_fit_seconds": fit}, steps)
            if learners.cost_trainer is not None:
                fit = _retrain(
                    learners.cost_trainer, self.store, config, self.logger, first, episodes, True
                )
                self.logger.scalars({"charts/cost_fit_seconds": fit}, steps)
        except TrainingDivergedError:
            # fit restored the best weights: keep them and the data, so the run stays usable.
            self.checkpoint(diverged=True)
            raise

    def _validation(self) -> dict[str, float]:
        """The model's validation metrics on the held-out episodes, as a refit logs them."""
        config, horizon = self.config, self.config.train.horizon
        train, val = split_episodes(self.store, config.train.val_fraction, config.seed)
        windows = validation_windows(train, val, horizon, FitSchedule.val_windows)
        return {f"val/{k}": v for k, v in self.learners.trainer.validate(windows).items()}

    def evaluate(self, last: bool) -> None:
        """Eval returns (and the policy's model exploitation), logged; hparams at the end.

        The same start states at every evaluation (and for the benchmarks' baselines): how
        hard a start state is must not masquerade as progress or regress between evaluations.
        """
        config, steps, parts = self.config, self.state.steps, self.learners.parts
        episodes, seed = config.loop.eval_episodes, config.seed
        returns = evaluate(
            self.learners.agent, self.task, episodes, seed, envs=config.loop.eval_envs
        )
        self.logger.scalars({"charts/eval_return": float(np.mean(returns))}, steps)
        costs = self.learners.costs
        if parts is not None:
            gap = imagination_gap(parts, self.task, episodes, seed, costs)
            self.logger.scalars({"policy/imagined_minus_real_return": gap}, steps)
        if costs.learned is not None:
            _, held_out = split_episodes(self.store, config.train.val_fraction, seed)
            errors = k_step_reward_errors(self.learners.model, costs.cost, held_out, seed=seed)
            self.logger.scalars(reward_error_metrics(errors), steps)
        self.bar.set_postfix(eval=f"{np.mean(returns):.1f}")
        if last:
            final = {"eval_return": float(np.mean(returns)), "env_steps": float(steps)}
            log_hparams(self.logger, config, final, steps)

    def checkpoint(self, diverged: bool = False) -> None:
        """data.npz first: a crash between the two writes leaves data one episode ahead of the
        checkpoint, which `resume` trims; the other order would lose an episode's data."""
        self.store.save(self.run_dir / DATA_FILE)
        learners, state = self.learners, self.state
        extra = policy_modules(learners.parts) | cost_modules(learners.costs)
        if diverged:
            meta = {"env_steps": state.steps, "diverged": True}
        else:
            groups, resume_meta = snapshot(learners, state)
            extra |= groups
            meta = {
                "env_steps": state.steps,
                "iteration": state.iteration,
                "model_steps": learners.trainer.total_steps,
                "resume": resume_meta,
            }
        save_world_model(
            self.run_dir / CHECKPOINT_FILE, self.config, self.task, learners.model, extra, **meta
        )


def _retrain(
    trainer: ModelTrainer,
    store: EpisodeStore,
    config: Config,
    logger: Logger,
    first: bool,
    episodes: int = 1,
    is_cost: bool = False,
) -> float:
    """Warm-started fit of the world model (`is_cost`: of the learned cost, on one-step
    windows) on everything collected so far, `loop.train_steps` per new episode at most; the
    first fit gets the full step budget."""
    loop = config.loop
    schedule = (cost_schedule if is_cost else fit_schedule)(
        config.train,
        max_steps=loop.first_train_steps if first else loop.train_steps * episodes,
        eval_every=min(config.train.eval_every, loop.train_steps),
    )
    log = cost_log(logger.scalars) if is_cost else logger.scalars
    return fit_world_model(trainer, store, schedule, seed=config.seed, log=log).seconds
