"""What `wm run --resume` continues from: loop counters, optimisers, RNG states, and the checks
that a checkpoint fits the run folder it is resumed in."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from agents.config import Config
from agents.configurator import PolicyParts
from agents.evaluation import Agent
from agents.mpc import MPCAgent
from agents.policy import PolicyAgent
from agents.run_folder import CHECKPOINT_FILE, check_same_run, load_policy_modules
from envs import Task
from worldmodel.checkpoint import (
    global_rng_state,
    load_global_rng_state,
    load_module_state,
    load_optimizer_state,
    optimizer_state,
)
from worldmodel.errors import CheckpointError
from worldmodel.forward import ForwardModel
from worldmodel.train import ModelTrainer

RESUME_VERSION = 1  #: version of the loop state a `wm run` checkpoint holds in meta['resume']


@dataclass
class LoopState:
    """Counters of the loop at a checkpoint: what `wm run --resume` continues from."""

    steps: int  #: real env steps taken (random seed steps included)
    episode: int  #: training episodes started so far (= the store's next episode id)
    iteration: int  #: retrain/evaluate/checkpoint rounds done


@dataclass
class Learners:
    """Everything of a run that learns or draws random numbers, besides the data."""

    model: ForwardModel
    trainer: ModelTrainer
    parts: PolicyParts | None
    agent: Agent
    collector: Agent
    policy_rng: np.random.Generator


def check_resumable(run_dir: Path, config: Config, task: Task, meta: dict) -> LoopState:
    """The loop state of a checkpoint, or a one-line error naming what does not match."""
    where = run_dir / CHECKPOINT_FILE
    check_same_run(run_dir, config, task, meta)
    resume_meta = meta.get("resume")
    if not isinstance(resume_meta, dict):
        raise CheckpointError(
            f"checkpoint {where} holds no loop state to resume from; only runs of `wm run` "
            "(made by this or a newer worldmodel) can be resumed"
        )
    version = int(resume_meta.get("version", 0))
    if version > RESUME_VERSION:
        raise CheckpointError(
            f"checkpoint {where} has loop state format {version}, newer than {RESUME_VERSION}; "
            "upgrade worldmodel"
        )
    try:
        return LoopState(**resume_meta["counters"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {where} has broken loop counters ({exc}); restore it from a copy"
        ) from exc


def _optimizers(learners: Learners) -> dict[str, torch.optim.Optimizer]:
    optimizers = {"model": learners.trainer.optimizer}
    if learners.parts is not None:
        optimizers["policy"] = learners.parts.policy_learner.optimizer
        optimizers["critic"] = learners.parts.critic_learner.optimizer
    return optimizers


def _generators(learners: Learners) -> dict[str, torch.Generator]:
    generators = {"trainer": learners.trainer.generator}
    agent = learners.agent
    if isinstance(agent, MPCAgent):
        generators["agent"] = agent.generator
        if agent.proposal is not None and hasattr(agent.proposal, "generator"):
            generators["proposal"] = agent.proposal.generator
    if learners.parts is not None:
        generators["policy_learner"] = learners.parts.policy_learner.generator
    return generators


def _numpy_rngs(learners: Learners) -> dict[str, np.random.Generator]:
    rngs = {"trainer": learners.trainer.rng, "policy": learners.policy_rng}
    if isinstance(learners.collector, PolicyAgent):
        rngs["collector"] = learners.collector.rng
    return rngs


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
    trainer, parts = learners.trainer, learners.parts
    counters = {
        "model_total_steps": trainer.total_steps,
        "model_skipped_updates": trainer.skipped_updates,
    }
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
    if learners.parts is not None:
        load_policy_modules(learners.parts, {k: to(v) for k, v in groups.items()})
    resume_meta = meta["resume"]
    try:
        for name, optimizer in _optimizers(learners).items():
            load_optimizer_state(
                optimizer,
                to(groups.get(f"optim_{name}", {})),
                resume_meta["optimizers"][name],
            )
        rng = groups["rng"]
        for name, generator in _generators(learners).items():
            generator.set_state(rng[name])
        load_global_rng_state(rng)
        for name, r in _numpy_rngs(learners).items():
            r.bit_generator.state = resume_meta["numpy_rng"][name]
        counters = resume_meta["learner_counters"]
        learners.trainer.total_steps = int(counters["model_total_steps"])
        learners.trainer.skipped_updates = int(counters["model_skipped_updates"])
        if learners.parts is not None:
            learners.parts.policy_learner.total_steps = int(counters["policy_total_steps"])
            learners.parts.policy_learner.skipped_updates = int(counters["policy_skipped_updates"])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {where} has optimiser or RNG state that does not fit this run ({exc}); "
            "restore the run's own checkpoint"
        ) from exc
