"""Configuration: frozen dataclasses; each field's docstring is its `--help` text.

`wm` (agents.app.cli) reads the options and their help from these classes with tyro, so each
docstring says what its option does, on one line (tyro keeps the breaks of indented lines). Only
the configurator reads a whole `Config`; components get explicit arguments. `fields.py` takes a
config to JSON and back, and applies `{"group.field": value}` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.planners.registry import PLANNERS
from worldmodel.cost.risk import RISKS
from worldmodel.errors import ConfigError

AGENTS = ("mpc", "policy", "mpc+policy")
COSTS = ("exact", "learned")


@dataclass(frozen=True)
class ModelConfig:
    """The forward model s[t+1] = G(s[t], a[t], z[t])."""

    kind: str = "cvae"
    """'cvae' (latent variable with latent dropout), 'deterministic' (no z) or 'ensemble' (a
    PETS-style probabilistic ensemble)."""
    latent_dim: int = 4
    """Size of z for the cvae."""
    hidden: int = 256
    """Width of the MLP layers."""
    layers: int = 3
    """Hidden layers of the decoder MLP."""
    dropout: float = 0.05
    """Dropout rate in the MLP; also what MC-dropout uncertainty samples."""
    latent_dropout: float = 0.5
    """Probability, per training window, that z comes from the prior: the window is scored by
    the energy score of prior samples instead of the ELBO, and no KL is charged."""
    latent_dropout_mode: str = "prior"
    """What replaces a dropped z: 'prior' (a sample of N(0, I), PPUU) or 'zero'."""
    beta: float = 1.0
    """Weight of the KL term."""
    elbo_weight: str = "none"
    """'none': the plain ELBO; 'variance': times the decoder's mean variance v (not
    differentiated), the same optimum with steps that do not grow as the learned scale shrinks;
    'per_dim': also each dim's NLL times its variance / v, so the mean's gradient is a squared
    error's in every dim (beta-NLL)."""
    energy_samples: int = 2
    """Prior rollouts per dropped (and validation) window, scored together by the energy score
    (>= 2; 'zero' latent dropout has one rollout whatever this is)."""
    prior_components: int = 4
    """z's prior: a learned mixture of this many Gaussians fitted to the posterior, whose mass
    stays off the gaps between the futures' clusters of z (0: N(0, I))."""
    members: int = 5
    """Members of the 'ensemble' (>= 2). The ensemble has no z encoder, MLP dropout or KL:
    latent_dim, dropout, latent_dropout, latent_dropout_mode, beta, elbo_weight,
    energy_samples and prior_components are the CVAE's."""

    def __post_init__(self) -> None:
        _check(
            self,
            positive=("hidden", "layers"),
            non_negative=("latent_dim", "beta", "prior_components"),
        )
        for name in ("members", "energy_samples"):
            if getattr(self, name) < 2:
                raise ConfigError(f"{name} must be >= 2, got {getattr(self, name)}")
        _check_choice(self, "kind", ("cvae", "deterministic", "ensemble"))
        _check_choice(self, "latent_dropout_mode", ("prior", "zero"))
        _check_choice(self, "elbo_weight", ("none", "variance", "per_dim"))
        _check_range(self, "latent_dropout", 0.0, 1.0)
        _check_range(self, "dropout", 0.0, 0.99)


@dataclass(frozen=True)
class CostModelConfig:
    """The learned cost and termination (with --cost learned), fit beside the world model."""

    hidden: int = 128
    """Width of the cost and termination MLPs."""
    layers: int = 2
    """Hidden layers of the cost and termination MLPs."""

    def __post_init__(self) -> None:
        _check(self, positive=("hidden",), non_negative=("layers",))


@dataclass(frozen=True)
class TrainConfig:
    """Fitting the forward model to the collected data."""

    horizon: int = 10
    """Steps unrolled on the model's own predictions in the multi-step loss."""
    batch_size: int = 256
    """Windows per gradient step."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 1e-5
    """AdamW weight decay."""
    grad_clip: float = 10.0
    """Gradient-norm clipping."""
    max_steps: int = 4000
    """Gradient steps per fit at most (a fit stops earlier when validation stalls)."""
    eval_every: int = 200
    """Gradient steps between validations; `wm train` checkpoints at each (what a crash loses)."""
    patience: int = 4
    """Validations without improvement before the fit stops."""
    val_fraction: float = 0.1
    """Share of episodes held out for validation."""
    lr_final: float = 1.0
    """Learning rate at the end of a fit (`max_steps`) as a fraction of `lr`; it falls along a
    half cosine from `lr` (1.0: constant). Updates between the loop's fits use `lr`."""
    ema_decay: float = 0.99
    """A fit validates, keeps and ends on an exponential moving average of its weights, which
    each update moves 1 - ema_decay of the way (0: the weights themselves)."""

    def __post_init__(self) -> None:
        _check(
            self,
            positive=(
                "horizon",
                "batch_size",
                "lr",
                "grad_clip",
                "max_steps",
                "eval_every",
                "patience",
            ),
            non_negative=("weight_decay",),
        )
        _check_range(self, "val_fraction", 0.01, 0.9)
        _check_range(self, "lr_final", 0.0, 1.0)
        _check_range(self, "ema_decay", 0.0, 0.9999)


@dataclass(frozen=True)
class PlannerConfig:
    """The MPC actor: how action sequences are optimised through the model."""

    kind: str = "gradient"
    """'gradient' (Adam through the model: the adjoint method), 'cem', 'mppi' or 'hybrid'."""
    horizon: int = 30
    """Actions planned ahead."""
    iterations: int = 3
    """Optimiser iterations per decision: Adam steps or CEM/MPPI rounds (hybrid: per stage).
    Each decision continues the previous one's shifted plan, so few are needed."""
    candidates: int = 3
    """Gradient: parallel sequences (warm start + restarts); hybrid: CEM sequences it refines."""
    lr: float = 0.1
    """Gradient planner and hybrid's gradient stage: Adam step size in normalised action units."""
    population: int = 200
    """CEM/MPPI and hybrid's CEM stage: sequences sampled per round."""
    elites: int = 20
    """CEM and hybrid's CEM stage: sequences the sampling distribution is refitted to."""
    temperature: float = 1.0
    """MPPI: temperature of the exponential weights, in cost units."""
    latent_samples: int = 2
    """Futures (z drawn from the prior) each sequence is scored on."""
    risk: str = "mean"
    """How a sequence's costs over its sampled futures combine: "mean", or "cvar" (the mean of
    the worst `cvar_alpha` share)."""
    cvar_alpha: float = 0.2
    """risk "cvar": the share of the worst sampled futures averaged."""
    uncertainty_weight: float = 0.0
    """Weight of the model-uncertainty penalty in the planned cost."""
    terminal_value: bool = True
    """mpc+policy: add the critic's cost-to-go from the plan's last state to the planned cost."""
    cuda_graphs: bool = True
    """Gradient planner on a CUDA device: record a decision as one CUDA graph and replay it
    (no early stop: always `iterations` steps). Ignored elsewhere."""

    def __post_init__(self) -> None:
        _check(
            self,
            positive=(
                "horizon",
                "iterations",
                "candidates",
                "lr",
                "population",
                "elites",
                "temperature",
                "latent_samples",
            ),
            non_negative=("uncertainty_weight",),
        )
        _check_choice(self, "kind", tuple(PLANNERS))
        _check_choice(self, "risk", RISKS)
        _check_range(self, "cvar_alpha", 0.01, 1.0)


@dataclass(frozen=True)
class PolicyConfig:
    """The policy learned through the model, and the critic that ends its imagined rollouts."""

    hidden: int = 64
    """Width of the policy MLP."""
    layers: int = 2
    """Hidden layers of the policy MLP."""
    horizon: int = 15
    """Imagined steps per policy update (H)."""
    gamma: float = 0.99
    """Discount of the imagined costs and of the critic."""
    uncertainty_weight: float = 10.0
    """Weight of the uncertainty hinge penalty (PPUU's lambda_u); 0 switches it off."""
    uncertainty_masks: int = 4
    """Dropout masks the model's uncertainty is measured over."""
    uncertainty_threshold: float = 1.0
    """Standard deviations above the uncertainty on real data before the penalty starts."""
    lr: float = 1e-3
    """Adam learning rate of the policy."""
    updates: int = 200
    """Policy and critic updates after each model refit."""
    batch_size: int = 256
    """Real start states per policy update."""
    noise: float = 0.3
    """Gaussian exploration noise of the policy while collecting (not when evaluated)."""
    critic_hidden: int = 128
    """Width of the critic MLP."""
    critic_lambda: float = 0.95
    """lambda of the critic's TD(lambda) targets."""
    critic_tau: float = 0.02
    """Polyak rate of the critic's slow target copy."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic."""
    latent_samples: int = 1
    """Imagined futures per start state (z drawn for each) that `risk` combines."""
    risk: str = "mean"
    """How a start state's costs over its sampled futures combine: "mean", or "cvar" (the mean
    of the worst `cvar_alpha` share)."""
    cvar_alpha: float = 0.2
    """risk "cvar": the share of the worst sampled futures averaged."""

    def __post_init__(self) -> None:
        _check_choice(self, "risk", RISKS)
        _check_range(self, "cvar_alpha", 0.01, 1.0)
        _check(
            self,
            positive=(
                "hidden",
                "layers",
                "horizon",
                "latent_samples",
                "uncertainty_masks",
                "lr",
                "updates",
                "batch_size",
                "critic_hidden",
                "critic_tau",
                "critic_lr",
            ),
            non_negative=("uncertainty_weight", "uncertainty_threshold", "noise"),
        )
        _check_range(self, "gamma", 0.0, 1.0)
        _check_range(self, "critic_lambda", 0.0, 1.0)


@dataclass(frozen=True)
class LoopConfig:
    """The model-based loop of `wm run`: act, record, retrain, evaluate."""

    seed_steps: int = 200
    """Random-action steps before the first model is trained (counted in the budget)."""
    first_train_steps: int = 1500
    """Gradient steps at most of the first fit, on the random seed steps."""
    train_steps: int = 300
    """Gradient steps at most of each warm-started retraining after an episode."""
    update_every: int = 0
    """0: retrain after each episode (`train_steps`, early-stopped) and train the policy then;
    N > 0: instead, every N real env steps, `model_updates` gradient steps of the model (and
    learned cost) and `policy_updates` policy and critic updates, on the episodes ended so far:
    a set update-to-data ratio, whose cost per step does not grow with the data."""
    model_updates: int = 1
    """Gradient steps of the model every `update_every` env steps (with `update_every` > 0)."""
    policy_updates: int = 1
    """Policy and critic updates every `update_every` env steps (with `update_every` > 0)."""
    eval_every: int = 5
    """Iterations (episodes) between evaluations; the last iteration is always evaluated."""
    eval_episodes: int = 3
    """Episodes per evaluation, on their own seeds; they are not training data."""
    eval_envs: int = 1
    """Evaluation episodes run side by side in a gymnasium vector env, one batched decision
    (a plan, or a policy's forward pass) per step for all of them; 1: one after another. The
    returns are the same either way, up to float rounding."""
    capacity: int = 1_000_000
    """Most transitions kept; the oldest whole episodes are dropped beyond it."""
    video_every: int = 3
    """Iterations between real-vs-imagined videos and prediction figures (with --video)."""
    renormalize: bool = False
    """Before each iteration's training, move the normalisation of model, learned cost, policy
    and critic to the statistics of all data so far, each keeping its function (the weights
    re-expressed): states the agent reaches later (a swung-up pole) stay of order one in the
    nets' units instead of many seed-data stds away. Off by default (the hand-coded tasks were
    measured without it); on in `wm run` for locomotion and tasks without presets."""

    def __post_init__(self) -> None:
        _check(
            self,
            positive=(
                "seed_steps",
                "first_train_steps",
                "train_steps",
                "model_updates",
                "policy_updates",
                "eval_every",
                "eval_episodes",
                "eval_envs",
                "capacity",
                "video_every",
            ),
            non_negative=("update_every",),
        )


@dataclass(frozen=True)
class Config:
    """Everything one command needs; saved as config.json in its run folder."""

    env: str = "Pendulum-v1"
    """Task id (see `wm tasks`)."""
    seed: int = 0
    """Seed of every random number generator in the run."""
    name: str = "train"
    """Experiment name, part of the run folder name (by default the command: train or run)."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'."""
    threads: int = 0
    """Torch CPU threads; 0: one per CPU core this process may run on."""
    steps: int = 20_000
    """Env-step budget: random steps for `wm train`; all real steps for `wm run`."""
    envs: int = 1
    """Training episodes `wm run` collects side by side in a gymnasium vector env, one batched
    decision per step for all of them, retraining after each round with the updates of as many
    episodes."""
    runs_dir: str = "runs"
    """Folder that holds the run folders."""
    progress: bool = True
    """Show progress bars."""
    video: bool = True
    """Log real-vs-imagined videos and prediction figures to TensorBoard."""
    agent: str = "mpc"
    """How `wm run` acts: 'mpc' (plan), 'policy' (the learned policy) or 'mpc+policy' (both)."""
    cost: str = "exact"
    """'exact' (the task's torch cost) or 'learned' (fit to the rewards beside the world model,
    and the termination too where the task has no exact one); default: exact where the task has
    an exact cost, else learned."""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    cost_model: CostModelConfig = field(default_factory=CostModelConfig)

    def __post_init__(self) -> None:
        _check(self, positive=("steps", "envs"), non_negative=("seed", "threads"))
        _check_choice(self, "agent", AGENTS)
        _check_choice(self, "cost", COSTS)


def _check(config: Any, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    for name in positive:
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)}")
    for name in non_negative:
        if not getattr(config, name) >= 0:
            raise ConfigError(f"{name} must be zero or positive, got {getattr(config, name)}")


def _check_range(config: Any, name: str, low: float, high: float) -> None:
    if not low <= getattr(config, name) <= high:
        raise ConfigError(f"{name} must be in [{low}, {high}], got {getattr(config, name)}")


def _check_choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
    if getattr(config, name) not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {getattr(config, name)!r}")
