"""What `wm run --resume` continues from: loop counters, optimisers, RNG states, and the checks
that a checkpoint fits the run folder it is resumed in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from agents.app.runs.folder import (
    BROKEN_STATE,
    CHECKPOINT_FILE,
    load_policy_modules,
    meta_count,
    resumable_state,
)
from agents.configurator.assemble import PolicyParts
from agents.configurator.config import Config
from envs import Task
from worldmodel.cost.intrinsic import IntrinsicCost
from worldmodel.cost.uncertainty import UncertaintyPenalty
from worldmodel.errors import CheckpointError
from worldmodel.forward.fit import ModelTrainer
from worldmodel.forward.model import ForwardModel
from worldmodel.io.checkpoint import (
    global_rng_state,
    load_global_rng_state,
    load_module_state,
    load_optimizer_state,
    optimizer_state,
)
from worldmodel.types import Actor

RESUME_VERSION = 2  #: version of the loop state a `wm run` checkpoint holds in meta['resume']
# Version 1 named the actors' generators by their kind; version 2 by their role and name.


@dataclass
class LoopState:
    """Counters of the loop at a checkpoint: what `wm run --resume` continues from."""

    steps: int  #: real env steps taken (random seed steps included)
    episode: int  #: training episodes started so far (= the store's next episode id)
    iteration: int  #: episodes retrained on so far (the random seed steps count as one)


@dataclass
class Learners:
    """Everything of a run that learns or draws random numbers, besides the data."""

    model: ForwardModel
    trainer: ModelTrainer
    penalty: UncertaintyPenalty
    parts: PolicyParts | None
    agent: Actor  #: the actor evaluated (and, for MPC, the one that collects)
    collector: Actor  #: the actor that collects the training episodes
    policy_rng: np.random.Generator
    costs: IntrinsicCost  #: the cost planner, policy and critic use
    cost_trainer: ModelTrainer | None = None  #: fits `costs.learned` (None: the cost is exact)


def check_resumable(run_dir: Path, config: Config, task: Task, meta: dict) -> LoopState:
    """The loop state of a checkpoint, or a one-line error naming what does not match."""
    resume_meta = resumable_state(
        run_dir,
        config,
        task,
        meta,
        "resume",
        RESUME_VERSION,
        "loop",
        "only runs of `wm run` can be resumed by it, runs of `wm train` by `wm train --resume`",
    )
    where, counters = run_dir / CHECKPOINT_FILE, resume_meta.get("counters")
    names = [f.name for f in fields(LoopState)]
    return LoopState(**{name: meta_count(counters, name, where, "loop") for name in names})


def _trainers(learners: Learners) -> dict[str, ModelTrainer]:
    """The fits of the run by name: the world model's and, where it is learned, the cost's."""
    trainers = {"model": learners.trainer}
    if learners.cost_trainer is not None:
        trainers["cost"] = learners.cost_trainer
    return trainers


def _optimizers(learners: Learners) -> dict[str, torch.optim.Optimizer]:
    optimizers = {name: trainer.optimizer for name, trainer in _trainers(learners).items()}
    if learners.parts is not None:
        optimizers["policy"] = learners.parts.policy_learner.optimizer
        optimizers["critic"] = learners.parts.critic_learner.optimizer
    return optimizers


def _actor_generators(learners: Learners) -> dict[str, torch.Generator | np.random.Generator]:
    """Every generator of the agent and (where it is another actor) the collector."""
    roles = {"agent": learners.agent}
    if learners.collector is not learners.agent:
        roles["collector"] = learners.collector
    return {
        f"{role}.{name}": generator
        for role, actor in roles.items()
        for name, generator in actor.generators().items()
    }


def _trainer_key(name: str) -> str:
    """The world model's trainer keeps the key it had before the cost could be learned."""
    return "trainer" if name == "model" else f"{name}_trainer"


def _generators(learners: Learners) -> dict[str, torch.Generator]:
    generators = {_trainer_key(n): t.generator for n, t in _trainers(learners).items()}
    if learners.parts is not None:
        generators["policy_learner"] = learners.parts.policy_learner.generator
    actors = _actor_generators(learners).items()
    return generators | {k: g for k, g in actors if isinstance(g, torch.Generator)}


def _numpy_rngs(learners: Learners) -> dict[str, np.random.Generator]:
    rngs = {_trainer_key(n): t.rng for n, t in _trainers(learners).items()}
    rngs["policy"] = learners.policy_rng
    actors = _actor_generators(learners).items()
    return rngs | {k: g for k, g in actors if isinstance(g, np.random.Generator)}


def snapshot(
    learners: Learners, state: LoopState
) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """Tensor groups and JSON meta of everything `restore` needs besides the weights."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    optim_meta = {}
    for name, optimizer in _optimizers(learners).items():
        groups[f"optim_{name}"], optim_meta[name] = optimizer_state(optimizer)
    rng = {name: g.get_state() for name, g in _generators(learners).items()}
    groups["rng"] = rng | global_rng_state()
    penalty = learners.penalty
    if penalty.mean is not None and penalty.std is not None:  # its calibration on the data
        groups["penalty"] = {"mean": penalty.mean, "std": penalty.std}
    parts = learners.parts
    counters = {}
    for name, trainer in _trainers(learners).items():
        counters[f"{name}_total_steps"] = trainer.total_steps
        counters[f"{name}_skipped_updates"] = trainer.skipped_updates
    if parts is not None:
        counters["policy_total_steps"] = parts.policy_learner.total_steps
        counters["policy_skipped_updates"] = parts.policy_learner.skipped_updates
    meta = {
        "version": RESUME_VERSION,
        "counters": asdict(state),
        "learner_counters": counters,
        "optimizers": optim_meta,
        "numpy_rng": {name: r.bit_generator.state for name, r in _numpy_rngs(learners).items()},
    }
    return groups, meta


def restore(learners: Learners, groups: dict, meta: dict, run_dir: Path) -> None:
    """Inverse of `snapshot` (and the weights); mismatches are one-line `CheckpointError`s."""
    where = run_dir / CHECKPOINT_FILE
    device = learners.model.device
    to = lambda tensors: {k: v.to(device) for k, v in tensors.items()}  # noqa: E731
    load_module_state(learners.model, to(groups.get("model", {})), "world model")
    if learners.costs.learned is not None:
        load_module_state(learners.costs.learned, to(groups.get("cost", {})), "learned cost")
    if learners.parts is not None:
        load_policy_modules(learners.parts, {k: to(v) for k, v in groups.items()})
    if "penalty" in groups:
        learners.penalty.mean, learners.penalty.std = (
            groups["penalty"][k].to(device) for k in ("mean", "std")
        )
    resume_meta = meta["resume"]
    try:
        for name, optimizer in _optimizers(learners).items():
            load_optimizer_state(
                optimizer,
                to(groups.get(f"optim_{name}", {})),
                resume_meta["optimizers"][name],
                f"{name} optimiser",
            )
        rng = groups["rng"]
        for name, generator in _generators(learners).items():
            generator.set_state(rng[name])
        load_global_rng_state(rng)
        for name, r in _numpy_rngs(learners).items():
            r.bit_generator.state = resume_meta["numpy_rng"][name]
        counters = resume_meta["learner_counters"]
        count = lambda key: meta_count(counters, key, where, "learner")  # noqa: E731
        for name, trainer in _trainers(learners).items():
            trainer.total_steps = count(f"{name}_total_steps")
            trainer.skipped_updates = count(f"{name}_skipped_updates")
        if learners.parts is not None:
            learners.parts.policy_learner.total_steps = count("policy_total_steps")
            learners.parts.policy_learner.skipped_updates = count("policy_skipped_updates")
    except CheckpointError:
        raise  # already one line saying what is wrong (a ValueError, so not re-worded below)
    except BROKEN_STATE as exc:
        raise CheckpointError(
            f"checkpoint {where} has optimiser or RNG state that does not fit this run ({exc}); "
            "restore the run's own checkpoint"
        ) from exc
