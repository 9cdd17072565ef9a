"""The MPC agent: receding horizon with a shifted warm start, and the plan it executes."""

import numpy as np
import torch
from torch import Tensor

from agents.mpc import MPCAgent
from agents.planners import shift_plan
from worldmodel.cost.trajectory import TrajectoryCost
from worldmodel.forward.model import ForwardModel
from worldmodel.perception import Perception
from worldmodel.types import Objective, PlanResult

HORIZON = 4


class RecordingPlanner:
    """Returns a fresh known plan per call and records the warm start it was given."""

    horizon = HORIZON

    def __init__(self) -> None:
        self.inits: list[Tensor | None] = []
        self.plans: list[Tensor] = []

    def plan(
        self, objective: Objective, init: Tensor | None = None, generator: object = None
    ) -> PlanResult:
        self.inits.append(None if init is None else init.clone())
        call = len(self.plans)
        plan = torch.linspace(-0.9, 0.9, HORIZON)[:, None].roll(call, 0) * (0.5 + 0.1 * call)
        self.plans.append(plan)
        return PlanResult(plan, float(objective(plan[:, None])[0]), 1)


def _agent(planner: RecordingPlanner) -> MPCAgent:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=2, hidden=8, layers=1, dropout=0.0).eval()
    cost = lambda s, a, s2: s2.square().sum(-1) + a.square().sum(-1)  # noqa: E731
    return MPCAgent(model, Perception(2), TrajectoryCost(cost), planner, latent_samples=2)


def test_each_plan_starts_from_the_previous_one_shifted_and_executes_its_first_action() -> None:
    planner = RecordingPlanner()
    agent = _agent(planner)
    obs = np.array([0.3, -0.1], np.float32)
    actions = [agent.act(obs) for _ in range(3)]
    assert planner.inits[0] is None
    for previous, init in zip(planner.plans, planner.inits[1:], strict=False):
        torch.testing.assert_close(init, shift_plan(previous))
    for plan, action in zip(planner.plans, actions, strict=True):
        np.testing.assert_allclose(action, plan[0].numpy())
    agent.reset()
    agent.act(obs)
    assert planner.inits[-1] is None  # a new episode forgets the old plan


def test_the_decision_records_the_plans_cost_and_its_first_step() -> None:
    planner = RecordingPlanner()
    agent = _agent(planner)
    agent.act(np.array([0.3, -0.1], np.float32))
    decision = agent.last
    assert decision is not None and not decision.fallback
    assert decision.planned_step_cost < decision.planned_cost  # positive costs: 1 step < 4
    assert decision.seconds > 0
