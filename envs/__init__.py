"""Tasks: gymnasium envs, with their rewards as differentiable torch costs where known.

`make_task` takes a built-in task, any gymnasium id with a bounded Box action space (its cost is
then learned), `module:id`, or a DeepMind Control id; `register_task` gives an env of your own
an exact cost and termination (`envs.registry`).
"""

from envs.registry import make_env, make_task, register_task, registered
from envs.tasks import (
    TASKS,
    Task,
    UnknownTaskError,
    UnsupportedEnvError,
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
    "register_task",
    "registered",
]
