"""The configurator: the configuration (frozen dataclasses), per-task presets, and the assembly
of perception, world model, cost and actor from them. The only code that reads a whole config."""

from agents.configurator.assemble import (
    PolicyParts,
    build_agent,
    build_model,
    build_penalty,
    build_planner,
    build_policy_parts,
    build_trainer,
    cost_schedule,
    fit_schedule,
    intrinsic_cost,
    learns_cost,
    new_learned_cost,
    new_world_model,
    resolve_device,
    set_threads,
)
from agents.configurator.config import Config
from agents.configurator.fields import from_dict, to_dict, with_overrides
from agents.configurator.presets import PRESETS, RUN_PRESETS, check_for_task, make_config

__all__ = [
    "PRESETS",
    "RUN_PRESETS",
    "Config",
    "PolicyParts",
    "build_agent",
    "build_model",
    "build_penalty",
    "build_planner",
    "build_policy_parts",
    "build_trainer",
    "check_for_task",
    "cost_schedule",
    "fit_schedule",
    "from_dict",
    "intrinsic_cost",
    "learns_cost",
    "make_config",
    "new_learned_cost",
    "new_world_model",
    "resolve_device",
    "set_threads",
    "to_dict",
    "with_overrides",
]
