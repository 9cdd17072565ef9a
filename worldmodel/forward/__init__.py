"""The world model: the conditional VAE forward model with latent dropout, its fit to the
episode store, and its k-step prediction error."""

from worldmodel.forward.evaluate import KStepError, k_step_errors, normalized_error
from worldmodel.forward.fit import (
    FitResult,
    FitSchedule,
    FitState,
    ModelTrainer,
    fit_world_model,
    split_episodes,
)
from worldmodel.forward.model import ForwardModel, LossTerms

__all__ = [
    "FitResult",
    "FitSchedule",
    "FitState",
    "ForwardModel",
    "KStepError",
    "LossTerms",
    "ModelTrainer",
    "fit_world_model",
    "k_step_errors",
    "normalized_error",
    "split_episodes",
]
