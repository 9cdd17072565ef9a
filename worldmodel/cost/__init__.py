"""The cost module: what an imagined trajectory costs (the task's intrinsic cost, from
`envs.costs`, summed over imagination), the trainable critic that predicts the cost beyond the
horizon, and the uncertainty penalty that keeps plans and policies where the model is right."""

from worldmodel.cost.critic import Critic, CriticLearner, td_lambda_targets
from worldmodel.cost.trajectory import (
    Trajectory,
    TrajectoryCost,
    TrajectoryTerms,
    alive_weights,
    imagine,
)
from worldmodel.cost.uncertainty import UncertaintyPenalty

__all__ = [
    "Critic",
    "CriticLearner",
    "Trajectory",
    "TrajectoryCost",
    "TrajectoryTerms",
    "UncertaintyPenalty",
    "alive_weights",
    "imagine",
    "td_lambda_targets",
]
