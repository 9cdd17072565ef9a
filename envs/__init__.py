"""Supported tasks: gymnasium envs with their rewards as differentiable torch costs."""

from envs.tasks import (
    TASKS,
    Task,
    UnknownTaskError,
    UnsupportedEnvError,
    make_env,
    make_task,
)
from worldmodel.types import CostFn, TerminationFn

__all__ = [
    "TASKS",
    "CostFn",
    "Task",
    "TerminationFn",
    "UnknownTaskError",
    "UnsupportedEnvError",
    "make_env",
    "make_task",
]
