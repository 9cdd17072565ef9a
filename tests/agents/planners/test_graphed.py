"""The CUDA-graph decision: the fixed-iteration search it records, and its fallback off CUDA.

`static_search` must be the gradient planner's own search (when early stopping cannot trigger),
so that a recorded decision plans what an eager one does; off CUDA nothing is recorded and the
agent plans as before. The recording itself runs only where CUDA is (skipped elsewhere).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from planner_problems import gen
from torch import Tensor

from agents.mpc import MPCAgent
from agents.planners import GradientPlanner
from agents.planners.graphed import GraphedSearch, static_search
from worldmodel.cost.trajectory import TrajectoryCost
from worldmodel.forward.model import ForwardModel
from worldmodel.perception import Perception

T, A = 7, 2


def quadratic(actions: Tensor) -> Tensor:
    """Optimum outside the box on some coordinates, so that projection matters."""
    target = torch.linspace(-1.5, 1.5, T * A).view(T, 1, A)
    return (actions - target).square().sum((0, 2)) + (actions[1:] - actions[:-1]).abs().sum((0, 2))


@pytest.mark.parametrize(
    "settings",
    [{}, {"lr_decay": 0.8, "max_grad_norm": 0.3}, {"max_grad_norm": None, "lr": 0.3}],
)
def test_the_static_search_is_the_planners_search_without_an_early_stop(settings: dict) -> None:
    planner = GradientPlanner(T, -1.0, 1.0, A, iterations=12, patience=50, **settings)
    starts = torch.rand(T, 4, A, generator=gen(3)) * 4 - 2
    starts[0, 1, 0] = float("nan")  # a non-finite start entry is the box's middle, as in optimize
    eager = planner.optimize(quadratic, starts)
    x, cost = static_search(planner, quadratic, starts)
    order = torch.argsort(cost, stable=True)
    torch.testing.assert_close(x[:, order], eager.actions, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cost[order], eager.costs, rtol=1e-5, atol=1e-6)
    assert eager.iterations == 12


def test_off_cuda_nothing_is_recorded_and_the_search_runs_eagerly() -> None:
    planner = GradientPlanner(T, -1.0, 1.0, A, iterations=5)
    calls = []

    def build(states: Tensor, z: Tensor):
        calls.append((states, z))
        return quadratic

    search = GraphedSearch(planner, build)
    assert not search.graphed
    starts = torch.zeros(T, 3, A)
    x, cost = search(torch.zeros(1, 2), torch.zeros(T, 1, 0), starts)
    expected = static_search(planner, quadratic, starts)
    torch.testing.assert_close(x, expected[0], rtol=0, atol=0)
    assert len(calls) == 1


def mpc(cuda_graphs: bool = True) -> MPCAgent:
    torch.manual_seed(2)
    model = ForwardModel(3, A, latent_dim=2, hidden=16, layers=2, dropout=0.0).eval()
    cost = lambda s, a, s2: (s2 - 0.3).square().sum(-1) + 0.1 * a.square().sum(-1)  # noqa: E731
    planner = GradientPlanner(T, -1.0, 1.0, A, iterations=6, candidates=3, lr=0.1)
    return MPCAgent(model, Perception(3), TrajectoryCost(cost), planner, latent_samples=2)


def test_a_cpu_agent_does_not_take_the_graph_path() -> None:
    assert mpc()._graphed is None


def test_the_recorded_decision_path_plans_what_the_eager_agent_plans() -> None:
    """The graph path's bookkeeping (starts, restarts, per-env choice), run eagerly on CPU: the
    same actions, step after step, as the agent without it (6 iterations: no early stop)."""
    graphed, eager = mpc(), mpc()
    graphed._graphed = GraphedSearch(graphed.planner, graphed._flat_objective)
    obs = np.array([0.2, -0.5, 0.1], np.float32)
    for _ in range(4):
        np.testing.assert_allclose(graphed.act(obs), eager.act(obs), rtol=0, atol=1e-5)
        assert graphed.last.planned_cost == pytest.approx(eager.last.planned_cost, rel=1e-5)
        obs = obs * 0.8 + 0.1
    assert torch.equal(graphed.generator.get_state(), eager.generator.get_state())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="records a CUDA graph: needs CUDA")
def test_a_recorded_decision_replays_the_eager_search_on_cuda() -> None:
    planner = GradientPlanner(T, -1.0, 1.0, A, iterations=6, device="cuda")
    search = GraphedSearch(planner, lambda states, z: quadratic)
    assert search.graphed
    for seed in range(3):
        starts = torch.rand(T, 3, A, generator=gen(seed)).cuda()
        x, cost = search(torch.zeros(1, 2).cuda(), torch.zeros(T, 1, 0).cuda(), starts)
        expected_x, expected_cost = static_search(planner, quadratic, starts)
        torch.testing.assert_close(x, expected_x)
        torch.testing.assert_close(cost, expected_cost)
