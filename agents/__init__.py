"""agents: the actor (planners, the MPC agent, the policy learned through the model) and the
configurator that assembles every module from one `Config`.

The application on top of them (the `wm` command line, its loops, run folders and TensorBoard
media) is `agents.app`; nothing here imports it.
"""

from agents.configurator import (
    Config,
    build_agent,
    build_model,
    build_planner,
    build_policy_parts,
    make_config,
)
from agents.mpc import MPCAgent
from agents.planners import (
    CEMPlanner,
    GradientPlanner,
    HybridPlanner,
    MPPIPlanner,
    make_planner,
    register_planner,
    shift_plan,
)
from agents.policy import Policy, PolicyAgent, PolicyLearner, PolicyProposal

__all__ = [
    "CEMPlanner",
    "Config",
    "GradientPlanner",
    "HybridPlanner",
    "MPCAgent",
    "MPPIPlanner",
    "Policy",
    "PolicyAgent",
    "PolicyLearner",
    "PolicyProposal",
    "build_agent",
    "build_model",
    "build_planner",
    "build_policy_parts",
    "make_config",
    "make_planner",
    "register_planner",
    "shift_plan",
]
