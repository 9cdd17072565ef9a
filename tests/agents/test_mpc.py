"""The MPC agent: receding horizon with a shifted warm start, and the plan it executes."""

import logging
import time

import numpy as np
import pytest
import torch
from torch import Tensor

from agents.configurator.config import Config, PlannerConfig
from agents.mpc import MPCAgent
from agents.planners import shift_plan
from worldmodel.cost.trajectory import Trajectory, TrajectoryCost
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


def _agent(planner: RecordingPlanner, action_dim: int = 1) -> MPCAgent:
    torch.manual_seed(0)
    model = ForwardModel(2, action_dim, latent_dim=2, hidden=8, layers=1, dropout=0.0).eval()
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


@pytest.mark.parametrize("action_dim", [1, 2])
def test_the_objective_averages_each_candidate_over_the_shared_latent_samples(
    action_dim: int,
) -> None:
    agent = _agent(RecordingPlanner(), action_dim)
    g = torch.Generator().manual_seed(0)
    state, z = torch.tensor([0.3, -0.1]), torch.randn(HORIZON, 3, 2, generator=g)  # K = 3
    actions = torch.rand(HORIZON, 5, action_dim, generator=g) * 2 - 1  # N = 5
    with torch.no_grad():
        got = agent.objective(state, z)(actions)
        expected = torch.zeros(5)
        for n in range(5):
            for k in range(3):
                s = agent.model.rollout(state[None], actions[:, n : n + 1], z[:, k : k + 1])
                states = torch.cat([state[None, None], s])
                trajectory = Trajectory(states, actions[:, n : n + 1], z[:, k : k + 1])
                expected[n] += agent.trajectory_cost(trajectory).total[0] / 3
    torch.testing.assert_close(got, expected)


def test_agents_with_one_seed_plan_alike_and_need_latent_samples() -> None:
    obs = np.array([0.3, -0.1], np.float32)
    first, second = _agent(CheapPlanner()), _agent(CheapPlanner())
    assert first.fallbacks == 0 and first.last is None and first.action_dim == 1
    np.testing.assert_array_equal(first.act(obs), second.act(obs))
    assert set(first.generators()) == {"plan"} and first.horizon == HORIZON
    with pytest.raises(ValueError, match="latent_samples"):
        MPCAgent(
            first.model, Perception(2), first.trajectory_cost, CheapPlanner(), latent_samples=0
        )
    assert MPCAgent(first.model, Perception(2), first.trajectory_cost, CheapPlanner(),
                    latent_samples=1).latent_samples == 1  # fmt: skip


class CheapPlanner:
    """Random restarts only, drawn from the generator it is given: plans depend on the seed."""

    horizon = HORIZON

    def plan(
        self, objective: Objective, init: Tensor | None = None, generator: object = None
    ) -> PlanResult:
        candidates = torch.rand(HORIZON, 16, 1, generator=generator) * 2 - 1
        costs = objective(candidates)
        best = int(costs.argmin())
        return PlanResult(candidates[:, best], float(costs[best]), 1)


class ScriptedPlanner:
    """Returns the plans it is given, one per call (NaN ones included)."""

    horizon = HORIZON

    def __init__(self, plans: list[Tensor]) -> None:
        self.plans, self.inits = plans, []

    def plan(
        self, objective: Objective, init: Tensor | None = None, generator: object = None
    ) -> PlanResult:
        self.inits.append(init)
        plan = self.plans[len(self.inits) - 1]
        return PlanResult(plan, float(objective(plan[:, None])[0]), 1)


def test_out_of_box_plans_are_clipped_and_non_finite_ones_fall_back_to_the_shifted_plan() -> None:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=0, hidden=8, layers=1, dropout=0.0).eval()
    cost = TrajectoryCost(lambda s, a, s2: s2.square().sum(-1) + a.square().sum(-1))
    wide = torch.tensor([[3.0], [-3.0], [0.5], [0.25]])
    nan = torch.full((HORIZON, 1), float("nan"))
    planner = ScriptedPlanner([wide, nan, nan, -wide])
    agent = MPCAgent(model, Perception(2), cost, planner, latent_samples=1)
    obs = np.array([0.3, -0.1], np.float32)

    first = agent.act(obs)
    assert first.dtype == np.float32 and first.tolist() == [1.0]  # 3 clipped into the box
    with torch.no_grad():  # latent_dim 0: the first step's cost is known without the agent's z
        s0 = torch.tensor([[0.3, -0.1]])
        states = torch.cat([s0[None], model.rollout(s0, wide[:1, None])])
        step = cost(Trajectory(states, wide[:1, None], torch.zeros(1, 1, 0))).total.item()
    assert agent.last.planned_step_cost == pytest.approx(step) and not agent.last.fallback
    assert agent.act(obs).tolist() == [-1.0]  # NaN plan: the shifted previous one, clipped
    assert agent.last.fallback and agent.last.planned_step_cost == 0.0 and agent.fallbacks == 1
    assert agent.act(obs).tolist() == [0.5]  # and shifted once more
    assert agent.fallbacks == 2
    agent.reset()
    planner.plans[3] = nan
    assert agent.act(obs).tolist() == [0.0]  # no previous plan: the zero action


def test_the_warm_start_is_the_shifted_plan_or_the_proposal_whichever_costs_less() -> None:
    """The proposal is the zero plan; the scripted plans are far from zero. With a cost on
    |a| the proposal wins once a previous plan exists to compare it with."""
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=0, hidden=8, layers=1, dropout=0.0).eval()
    cost = TrajectoryCost(lambda s, a, s2: a.square().sum(-1))
    far = torch.full((HORIZON, 1), 0.9)
    planner = ScriptedPlanner([far, far, far])
    proposal = lambda state, horizon: torch.zeros(horizon, 1)  # noqa: E731
    agent = MPCAgent(model, Perception(2), cost, planner, latent_samples=1, proposal=proposal)
    obs = np.array([0.3, -0.1], np.float32)
    agent.act(obs)
    torch.testing.assert_close(planner.inits[0], torch.zeros(HORIZON, 1))  # the only start
    agent.act(obs)
    torch.testing.assert_close(planner.inits[1], torch.zeros(HORIZON, 1))  # cheaper than `far`
    near_far = TrajectoryCost(lambda s, a, s2: (a - 0.9).square().sum(-1))
    costly = MPCAgent(model, Perception(2), near_far, ScriptedPlanner([far, far]),
                      latent_samples=1, proposal=proposal)  # fmt: skip
    costly.act(obs)
    costly.act(obs)
    torch.testing.assert_close(costly.planner.inits[1], shift_plan(far))  # now the plan wins


class ZPenalty:
    """An uncertainty penalty that is the sum of the latents each step was unrolled under."""

    def raw(self, s0: Tensor, actions: Tensor, z: Tensor) -> Tensor:
        return z.sum(-1)

    def __call__(self, u: Tensor) -> Tensor:
        return u


def test_the_penalty_sees_the_latents_the_candidates_were_unrolled_under() -> None:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=2, hidden=8, layers=1, dropout=0.0).eval()
    zero = lambda s, a, s2: torch.zeros(a.shape[:2])  # noqa: E731
    cost = TrajectoryCost(zero, penalty=ZPenalty(), penalty_weight=2.0)  # type: ignore[arg-type]
    agent = MPCAgent(model, Perception(2), cost, CheapPlanner(), latent_samples=3)
    z = torch.randn(HORIZON, 3, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = agent.objective(torch.tensor([0.3, -0.1]), z)(torch.zeros(HORIZON, 4, 1))
    # Every candidate: 2 * the mean over the K samples of the latents summed over time and dims.
    torch.testing.assert_close(got, torch.full((4,), 2.0 * float(z.sum()) / 3))


def test_an_agent_built_without_a_seed_uses_the_configurators_seed() -> None:
    agent = _agent(CheapPlanner())  # type: ignore[arg-type]
    assert agent.seed == Config().seed and agent.generator.initial_seed() == Config().seed


class FiniteCostNaNPlanner:
    """Claims a finite cost for a plan with a NaN in it."""

    horizon = HORIZON

    def plan(
        self, objective: Objective, init: Tensor | None = None, generator: object = None
    ) -> PlanResult:
        plan = torch.full((HORIZON, 1), 0.5)
        plan[2, 0] = float("nan")
        return PlanResult(plan, 1.0, 1)


def test_a_plan_with_a_non_finite_action_falls_back_even_at_a_finite_cost() -> None:
    agent = _agent(FiniteCostNaNPlanner())  # type: ignore[arg-type]
    action = agent.act(np.array([0.3, -0.1], np.float32))
    assert action.tolist() == [0.0] and agent.last.fallback and agent.fallbacks == 1


def test_the_decision_holds_the_executed_action_and_the_time_the_decision_took() -> None:
    agent = _agent(CheapPlanner())  # type: ignore[arg-type]
    before = time.perf_counter()
    action = agent.act(np.array([0.3, -0.1], np.float32))
    took = time.perf_counter() - before
    assert agent.last is not None
    np.testing.assert_array_equal(agent.last.action, action)
    assert 0.0 < agent.last.seconds <= took


def test_generators_are_the_plans_and_the_proposals_where_it_has_one() -> None:
    agent = _agent(RecordingPlanner())
    assert agent.generators() == {"plan": agent.generator}

    class Proposal:
        generator = torch.Generator().manual_seed(1)

        def __call__(self, state: Tensor, horizon: int) -> Tensor:
            return torch.zeros(horizon, 1)

    agent.proposal = Proposal()
    assert agent.generators() == {"plan": agent.generator, "proposal": Proposal.generator}


class NaNPlanner:
    """Every plan is NaN at a NaN cost: each decision falls back."""

    horizon = HORIZON

    def plan(
        self, objective: Objective, init: Tensor | None = None, generator: object = None
    ) -> PlanResult:
        return PlanResult(torch.full((HORIZON, 1), float("nan")), float("nan"), 1)


def test_fallbacks_are_logged_at_the_1st_2nd_4th_and_8th_naming_the_action_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Powers of two only (no flood); the message names the planner's cost, what was executed
    instead (zero action without a previous plan, then the shifted one) and the count."""
    agent = _agent(NaNPlanner())  # type: ignore[arg-type]
    obs = np.array([0.3, -0.1], np.float32)
    with caplog.at_level(logging.WARNING, logger="agents.mpc"):
        for _ in range(9):
            agent.act(obs)
    assert agent.fallbacks == 9
    used = lambda what, n: (  # noqa: E731
        f"MPC: non-finite plan (cost nan); used the {what} instead ({n} fallbacks so far)"
    )
    assert [r.getMessage() for r in caplog.records] == [
        used("zero action", 1),
        used("shifted previous plan", 2),
        used("shifted previous plan", 4),
        used("shifted previous plan", 8),
    ]


def test_a_fallback_at_a_finite_cost_logs_that_cost(caplog: pytest.LogCaptureFixture) -> None:
    """The logged cost is the planner's (1.0 here), not a placeholder."""
    agent = _agent(FiniteCostNaNPlanner())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="agents.mpc"):
        agent.act(np.array([0.3, -0.1], np.float32))
    assert [r.getMessage() for r in caplog.records] == [
        "MPC: non-finite plan (cost 1.0); used the zero action instead (1 fallbacks so far)"
    ]


class FixedPlanner:
    """Returns `plan` at a claimed finite cost, without evaluating it; records its warm starts."""

    horizon = HORIZON

    def __init__(self, plan: Tensor) -> None:
        self.plan_, self.inits = plan, []

    def plan(
        self, objective: Objective, init: Tensor | None = None, generator: object = None
    ) -> PlanResult:
        self.inits.append(init)
        return PlanResult(self.plan_, 1.0, 1)


def test_a_warm_start_of_nan_cost_loses_to_the_proposal_and_the_proposal_sees_the_state() -> None:
    """The shifted plan (all 0.9) costs NaN where any action exceeds 0.8, the proposal (all 0.5)
    a finite 1.0: NaN counts as the worst cost, so the proposal is the warm start. The proposal
    is asked for a plan from the perceived state, for the planner's horizon."""
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=0, hidden=8, layers=1, dropout=0.0).eval()
    nan = torch.tensor(float("nan"))
    cost = TrajectoryCost(lambda s, a, s2: torch.where(a > 0.8, nan, a.square()).sum(-1))
    asked: list[tuple[Tensor, int]] = []

    def proposal(state: Tensor, horizon: int) -> Tensor:
        asked.append((state.clone(), horizon))
        return torch.full((horizon, 1), 0.5)

    planner = FixedPlanner(torch.full((HORIZON, 1), 0.9))
    agent = MPCAgent(model, Perception(2), cost, planner, latent_samples=1, proposal=proposal)
    obs = np.array([0.3, -0.1], np.float32)
    agent.act(obs)
    agent.act(obs)
    torch.testing.assert_close(planner.inits[1], torch.full((HORIZON, 1), 0.5))
    assert len(asked) == 2 and all(h == HORIZON for _, h in asked)
    for state, _ in asked:
        torch.testing.assert_close(state, torch.tensor([0.3, -0.1]))


def test_by_default_each_decision_unrolls_two_latent_samples_per_candidate() -> None:
    """`latent_samples` defaults to the configurator's 2: z is drawn [T, 2, Z] and every
    candidate is unrolled under each of the 2 (one candidate: a batch of 2 rollouts)."""
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=2, hidden=8, layers=1, dropout=0.0).eval()
    cost = TrajectoryCost(lambda s, a, s2: s2.square().sum(-1))
    agent = MPCAgent(model, Perception(2), cost, FixedPlanner(torch.zeros(HORIZON, 1)))
    assert agent.latent_samples == PlannerConfig().latent_samples == 2
    batches: list[int] = []
    rollout = model.rollout

    def spy(s0: Tensor, actions: Tensor, z: Tensor | None = None) -> Tensor:
        batches.append(s0.shape[0])
        assert z is not None and z.shape == (actions.shape[0], s0.shape[0], 2)
        return rollout(s0, actions, z)

    model.rollout = spy  # type: ignore[method-assign]
    agent.act(np.array([0.3, -0.1], np.float32))
    assert batches == [2]  # only the first-step cost is evaluated: 1 candidate x 2 samples
