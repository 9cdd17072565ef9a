"""Assembly: the one place that reads a whole `Config` and builds the modules from it."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

import torch

from agents.configurator.config import (
    Config,
    CostModelConfig,
    ModelConfig,
    PlannerConfig,
    PolicyConfig,
    TrainConfig,
)
from agents.configurator.validate import usable_device
from agents.mpc import MPCAgent
from agents.planners import PlannerSettings, make_planner
from agents.policy import Policy, PolicyAgent, PolicyLearner, PolicyProposal
from envs import Task
from worldmodel.cost.critic import Critic, CriticLearner
from worldmodel.cost.intrinsic import IntrinsicCost
from worldmodel.cost.learned import CostStats, LearnedCost
from worldmodel.cost.risk import Risk
from worldmodel.cost.trajectory import TrajectoryCost
from worldmodel.cost.uncertainty import UncertaintyPenalty
from worldmodel.data.store import Stats
from worldmodel.errors import ConfigError
from worldmodel.forward.ensemble import EnsembleModel
from worldmodel.forward.fit import FitSchedule, ModelTrainer
from worldmodel.forward.model import ForwardModel
from worldmodel.perception import Perception
from worldmodel.types import Actor, Planner


def set_threads(threads: int) -> None:
    """Torch's CPU threads: `threads`, or (0) the cores this process may run on.

    torch defaults to every core of the machine, which oversubscribes a process confined to a
    few (taskset, containers) and makes small-tensor work many times slower.
    """
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else must be a usable torch device
    (`validate.usable_device`: one that exists here and computes)."""
    return usable_device(name)


def build_model(
    config: ModelConfig, state_dim: int, action_dim: int
) -> ForwardModel | EnsembleModel:
    """The forward model named by `config.kind`."""
    if config.kind == "ensemble":
        return EnsembleModel(state_dim, action_dim, config.members, config.hidden, config.layers)
    return ForwardModel(
        state_dim=state_dim,
        action_dim=action_dim,
        latent_dim=config.latent_dim if config.kind == "cvae" else 0,
        hidden=config.hidden,
        layers=config.layers,
        dropout=config.dropout,
        latent_dropout=config.latent_dropout,
        latent_dropout_mode=config.latent_dropout_mode,
        beta=config.beta,
        elbo_weight=config.elbo_weight,
        energy_samples=config.energy_samples,
        prior_components=config.prior_components,
    )


def new_world_model(
    config: ModelConfig, task: Task, stats: Stats, device: torch.device, seed: int
) -> ForwardModel | EnsembleModel:
    """A fresh model normalised by `stats`; its init (and later dropout) drawn from torch's
    global RNG seeded with `seed`, so a run repeats exactly."""
    torch.manual_seed(seed)
    model = build_model(config, task.obs_dim, task.act_dim)
    model.set_normalization(stats)
    return model.to(device)


def build_trainer(config: TrainConfig, model: ForwardModel, seed: int) -> ModelTrainer:
    return ModelTrainer(
        model, lr=config.lr, weight_decay=config.weight_decay, grad_clip=config.grad_clip, seed=seed
    )


def fit_schedule(
    config: TrainConfig,
    max_steps: int | None = None,
    eval_every: int | None = None,
    horizon: int | None = None,
) -> FitSchedule:
    """The fit's schedule; `max_steps`, `eval_every` and `horizon` replace the config's (the
    loop's refits; the learned cost's one-step windows, `cost_schedule`)."""
    steps = config.max_steps if max_steps is None else max_steps
    every = config.eval_every if eval_every is None else eval_every
    return FitSchedule(
        horizon=config.horizon if horizon is None else horizon,
        batch_size=config.batch_size,
        max_steps=steps,
        eval_every=min(every, steps),
        patience=config.patience,
        val_fraction=config.val_fraction,
        lr_final=config.lr_final,
        ema_decay=config.ema_decay,
    )


def cost_schedule(
    config: TrainConfig, max_steps: int | None = None, eval_every: int | None = None
) -> FitSchedule:
    """The learned cost's fit: the world model's schedule on one-step windows, so every
    transition (an episode's last one too) is drawn equally often."""
    return fit_schedule(config, max_steps, eval_every, horizon=1)


def learns_cost(config: Config) -> bool:
    """Whether the run fits a `LearnedCost` beside its world model."""
    return config.cost == "learned"


def build_learned_cost(config: CostModelConfig, task: Task) -> LearnedCost:
    """A `LearnedCost` for `task`, with a termination classifier where the task may end early
    and has no exact termination (weights and buffers as initialised, not normalised)."""
    terminates = task.terminates and task.terminated is None
    return LearnedCost(
        task.obs_dim, task.act_dim, config.hidden, config.layers, terminates=terminates
    )


def new_learned_cost(
    config: CostModelConfig,
    task: Task,
    stats: Stats,
    costs: CostStats,
    device: torch.device,
    seed: int,
) -> LearnedCost:
    """A fresh learned cost normalised by the data's statistics. Its init draws from a forked
    global RNG seeded with `seed`: the world model trains on the same random numbers whether
    the cost is exact or learned."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cost = build_learned_cost(config, task)
    cost.set_normalization(stats, costs)
    return cost.to(device)


def intrinsic_cost(config: Config, task: Task, learned: LearnedCost | None = None) -> IntrinsicCost:
    """The cost the run plans with: the task's exact one (`config.cost` 'exact'), or `learned`
    with the task's exact termination where it has one."""
    if config.cost == "learned":
        if learned is None:
            raise ConfigError("cost 'learned' needs the run's learned cost, fit beside its model")
        return IntrinsicCost.of_learned(learned, task.terminated)
    if task.cost is None or task.planning_cost is None:
        raise ConfigError(f"{task.id} has no exact cost; pass --cost learned")
    return IntrinsicCost(task.cost, task.planning_cost, task.terminated)


def build_planner(config: PlannerConfig, action_dim: int, device: torch.device) -> Planner:
    """The planner named by `config.kind` (from the registry), over the action box [-1, 1]."""
    # PlannerConfig names each setting as PlannerSettings does: pass on the ones it has.
    shared = {
        f.name: getattr(config, f.name) for f in fields(PlannerSettings) if hasattr(config, f.name)
    }
    settings = PlannerSettings(**shared | {"action_dim": action_dim, "device": device})
    try:
        return make_planner(config.kind, settings)
    except ValueError as exc:
        raise ConfigError(f"{exc}; pass another --planner.kind") from exc


def build_penalty(config: PolicyConfig, model: ForwardModel) -> UncertaintyPenalty:
    """The uncertainty penalty the planner and the policy share (calibrate it after each fit)."""
    return UncertaintyPenalty(
        model, masks=config.uncertainty_masks, threshold=config.uncertainty_threshold
    )


def penalty_horizon(config: Config) -> int:
    """Steps the penalty must be calibrated over (the longest rollout it scores); 0 where
    neither the planner nor the policy pays it."""
    policy = config.agent != "mpc" and config.policy.uncertainty_weight > 0
    planner = config.agent != "policy" and config.planner.uncertainty_weight > 0
    return max(config.policy.horizon if policy else 0, config.planner.horizon if planner else 0)


@dataclass(frozen=True)
class PolicyParts:
    """The policy, the critic and their learners, built for one task and model."""

    policy: Policy
    critic: Critic
    policy_learner: PolicyLearner
    critic_learner: CriticLearner


def build_policy_parts(
    config: Config,
    task: Task,
    model: ForwardModel,
    stats: Stats,
    device: torch.device,
    penalty: UncertaintyPenalty,
    costs: IntrinsicCost | None = None,
) -> PolicyParts:
    """Policy and critic normalised by the data statistics, and the learners that train them on
    `costs` (None: the task's exact cost)."""
    costs = costs or intrinsic_cost(config, task)
    pc = config.policy
    policy = Policy(task.obs_dim, task.act_dim, hidden=pc.hidden, layers=pc.layers)
    policy.set_normalization(stats)
    critic = Critic(task.obs_dim, hidden=pc.critic_hidden, layers=2)
    # One step's cost is O(1) on these tasks; the scale keeps the critic's output O(1).
    critic.set_normalization(stats, value_scale=1.0 / (1.0 - pc.gamma))
    policy.to(device)
    critic.to(device)
    critic_learner = CriticLearner(
        critic,
        gamma=pc.gamma,
        lambda_=pc.critic_lambda,
        tau=pc.critic_tau,
        lr=pc.critic_lr,
        device=device,
    )
    objective = TrajectoryCost(
        costs.planning_cost,
        costs.terminated,
        critic_learner.value,
        gamma=pc.gamma,
        penalty=penalty if pc.uncertainty_weight > 0 else None,
        penalty_weight=pc.uncertainty_weight,
    )
    policy_learner = PolicyLearner(
        policy,
        model,
        objective,
        horizon=pc.horizon,
        lr=pc.lr,
        latent_samples=pc.latent_samples if model.stochastic else 1,
        risk=Risk(pc.risk, pc.cvar_alpha),
        seed=config.seed,
        device=device,
    )
    return PolicyParts(policy, critic, policy_learner, critic_learner)


def build_agent(
    config: Config,
    task: Task,
    model: ForwardModel,
    device: torch.device,
    parts: PolicyParts | None = None,
    penalty: UncertaintyPenalty | None = None,
    costs: IntrinsicCost | None = None,
) -> Actor:
    """The actor of `config.agent`: the planner over perception -> model -> cost (`costs`;
    None: the task's exact cost), the policy, or the planner seeded by the policy (with the
    critic as terminal cost unless `planner.terminal_value` is off)."""
    perception = Perception(task.obs_dim, device)
    if config.agent == "policy":
        if parts is None:
            raise ConfigError("agent 'policy' needs a trained policy; run `wm run --agent policy`")
        return PolicyAgent(parts.policy, perception, seed=config.seed)
    pc = config.planner
    with_policy = config.agent == "mpc+policy" and parts is not None
    if pc.uncertainty_weight > 0 and penalty is None:
        raise ConfigError("planner.uncertainty_weight > 0 needs the run's data to calibrate on")
    value = parts.critic_learner.value if with_policy and pc.terminal_value else None
    # The plan's own costs are summed undiscounted; the critic's value, a discounted
    # cost-to-go from s[H], is discounted by the H steps before it.
    costs = costs or intrinsic_cost(config, task)
    objective = TrajectoryCost(
        costs.planning_cost,
        costs.terminated,
        value,
        value_discount=config.policy.gamma**pc.horizon,
        penalty=penalty if pc.uncertainty_weight > 0 else None,
        penalty_weight=pc.uncertainty_weight,
    )
    return MPCAgent(
        model,
        perception,
        objective,
        build_planner(pc, task.act_dim, device),
        latent_samples=pc.latent_samples if model.stochastic else 1,
        risk=Risk(pc.risk, pc.cvar_alpha),
        proposal=PolicyProposal(parts.policy, model, seed=config.seed) if with_policy else None,
        seed=config.seed,
        cuda_graphs=pc.cuda_graphs,
    )
