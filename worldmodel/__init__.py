"""worldmodel: learn world models from rollouts and control with them.

The modules of LeCun's diagram, each in one place:

- perception (`worldmodel.perception`): observation -> state;
- world model (`worldmodel.forward`): the CVAE `s[t+1] = G(s[t], a[t], z[t])`, its fit and
  its k-step error, fed by the episode store (`worldmodel.data`);
- cost (`worldmodel.cost`): the one cost of an imagined trajectory, the critic and the
  uncertainty penalty (each task's intrinsic cost is in `envs.costs`);
- the interfaces between them and the actor (`worldmodel.types`); the actor itself (planners,
  MPC, policy) and the configurator are in the `agents` package.

Importing it loads torch, numpy and gymnasium, nothing of TensorBoard, matplotlib or a renderer,
and changes no global state.
"""

from worldmodel.cost import (
    Critic,
    CriticLearner,
    Trajectory,
    TrajectoryCost,
    TrajectoryTerms,
    UncertaintyPenalty,
    alive_weights,
    imagine,
    td_lambda_targets,
)
from worldmodel.data import (
    EpisodeResult,
    EpisodeStore,
    Stats,
    Window,
    collect,
    random_policy,
    run_episode,
)
from worldmodel.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    TrainingDivergedError,
    WorldModelError,
)
from worldmodel.forward import (
    FitResult,
    FitSchedule,
    ForwardModel,
    KStepError,
    ModelTrainer,
    fit_world_model,
    k_step_errors,
    split_episodes,
)
from worldmodel.perception import Perception
from worldmodel.simulator import BatchedWorldModelEnv, WorldModelEnv
from worldmodel.types import (
    Actor,
    CostFn,
    Decision,
    Objective,
    Planner,
    PlanResult,
    TerminationFn,
    ValueFn,
    WorldModel,
)

__all__ = [
    "Actor",
    "BatchedWorldModelEnv",
    "CheckpointError",
    "ConfigError",
    "CostFn",
    "Critic",
    "CriticLearner",
    "DataError",
    "Decision",
    "EpisodeResult",
    "EpisodeStore",
    "FitResult",
    "FitSchedule",
    "ForwardModel",
    "KStepError",
    "ModelTrainer",
    "Objective",
    "Perception",
    "PlanResult",
    "Planner",
    "Stats",
    "TerminationFn",
    "TrainingDivergedError",
    "Trajectory",
    "TrajectoryCost",
    "TrajectoryTerms",
    "UncertaintyPenalty",
    "ValueFn",
    "Window",
    "WorldModel",
    "WorldModelEnv",
    "WorldModelError",
    "alive_weights",
    "collect",
    "fit_world_model",
    "imagine",
    "k_step_errors",
    "random_policy",
    "run_episode",
    "split_episodes",
    "td_lambda_targets",
]
