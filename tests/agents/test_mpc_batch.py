"""MPC for several envs at once (`MPCAgent.act_batch`): each env gets the plan `act` would give it.

With a deterministic model (no latent draws) and no random restarts, planning E envs together is
exactly planning each alone, step after step, warm starts included; a planner without
`plan_batch` is called env by env.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from agents.mpc import MPCAgent
from agents.planners import CEMPlanner, GradientPlanner
from worldmodel.cost.trajectory import TrajectoryCost
from worldmodel.forward.model import ForwardModel
from worldmodel.perception import Perception
from worldmodel.types import PlanResult

S, A, T = 3, 2, 5
OBS = np.array([[0.3, -0.1, 0.5], [-0.4, 0.2, 0.0], [0.1, 0.9, -0.7]], np.float32)


def cost(s: Tensor, a: Tensor, s2: Tensor) -> Tensor:
    return (s2 - 0.2).square().sum(-1) + 0.1 * a.square().sum(-1)


def agent(planner, latent_dim: int = 0, seed: int = 0) -> MPCAgent:
    torch.manual_seed(1)
    model = ForwardModel(S, A, latent_dim=latent_dim, hidden=16, layers=2, dropout=0.0).eval()
    return MPCAgent(
        model, Perception(S), TrajectoryCost(cost), planner, latent_samples=2, seed=seed
    )


def gradient() -> GradientPlanner:
    return GradientPlanner(T, -1.0, 1.0, A, iterations=8, candidates=1, lr=0.1, patience=100)


@pytest.mark.parametrize("make_planner", [gradient, lambda: CEMPlanner(T, -1.0, 1.0, A)])
def test_a_batch_of_envs_is_planned_as_each_env_alone_step_after_step(make_planner) -> None:
    batch = agent(make_planner())
    alone = [agent(make_planner()) for _ in OBS]
    shared = torch.Generator().manual_seed(0)  # CEM's draws, env by env, as the batch makes them
    for single in alone:
        single.generator = shared
    obs = OBS
    for _ in range(3):
        actions = batch.act_batch(obs)
        assert actions.shape == (len(OBS), A) and actions.dtype == np.float32
        for e, single in enumerate(alone):
            # Batched matmuls round differently from single ones: equal to float rounding.
            np.testing.assert_allclose(actions[e], single.act(obs[e]), rtol=0, atol=1e-4)
            assert batch.last_batch[e].planned_cost == pytest.approx(
                single.last.planned_cost, rel=1e-5
            )
        obs = obs * 0.9 + 0.05
    assert len(batch.last_batch) == len(OBS)


def test_reset_envs_forgets_only_those_envs_plans() -> None:
    """After env 1's episode ends it plans from scratch, as a fresh agent does; env 0 goes on
    from its shifted plan, as the agent that never reset does."""
    batch, fresh, continued = agent(gradient()), agent(gradient()), agent(gradient())
    batch.act_batch(OBS[:2])
    continued.act(OBS[0])
    batch.reset_envs([1])
    actions = batch.act_batch(OBS[:2])
    np.testing.assert_allclose(actions[1], fresh.act(OBS[1]), rtol=0, atol=1e-4)
    np.testing.assert_allclose(actions[0], continued.act(OBS[0]), rtol=0, atol=1e-4)
    batch.reset()
    np.testing.assert_allclose(batch.act_batch(OBS[:1])[0], agent(gradient()).act(OBS[0]))


def test_latents_are_drawn_once_per_decision_for_all_envs() -> None:
    """One z [T, K, Z] per batch decision: the generator advances by one draw whatever E."""
    planner = GradientPlanner(T, -1.0, 1.0, A, iterations=2, candidates=1)
    one, three = agent(planner, latent_dim=2), agent(planner, latent_dim=2)
    one.act_batch(OBS[:1])
    three.act_batch(OBS)
    assert torch.equal(one.generator.get_state(), three.generator.get_state())


class NaNPlanner:
    """Plans NaN for env 1 only."""

    horizon = T

    def plan_batch(self, objective, envs, init=None, generator=None) -> list[PlanResult]:
        plans = [torch.full((T, A), 0.5) for _ in range(envs)]
        plans[1] = torch.full((T, A), math.nan)
        costs = objective(torch.stack(plans, dim=1)[:, :, None])[:, 0]
        return [PlanResult(p, float(c), 1) for p, c in zip(plans, costs, strict=True)]


def test_a_non_finite_plan_falls_back_for_that_env_alone() -> None:
    batch = agent(NaNPlanner())
    actions = batch.act_batch(OBS)
    assert np.isfinite(actions).all()
    np.testing.assert_array_equal(actions[1], np.zeros(A, np.float32))
    np.testing.assert_allclose(actions[[0, 2]], 0.5)
    assert [d.fallback for d in batch.last_batch] == [False, True, False]
    assert batch.fallbacks == 1
    batch.act_batch(OBS)  # env 1's safe plan is the zero plan shifted: still finite
    assert batch.fallbacks == 2


def test_the_batch_objective_is_each_envs_objective_on_its_own_candidates() -> None:
    """[T, E, N, A] -> [E, N]: env e's N candidates scored from env e's state under the shared
    latents, as `objective` scores them (several candidates and latents, so a layout that pairs
    a candidate with another env's state or another sample's z shows)."""
    mpc = agent(gradient(), latent_dim=2)
    states = torch.as_tensor(OBS)
    z = mpc.model.sample_prior(T, 3, generator=torch.Generator().manual_seed(4))
    actions = torch.rand(T, len(OBS), 4, A, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        batch = mpc.batch_objective(states, z)(actions)
        assert batch.shape == (len(OBS), 4)
        for e in range(len(OBS)):
            alone = mpc.objective(states[e], z)(actions[:, e])
            torch.testing.assert_close(batch[e], alone, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(batch[0], batch[1])


def test_a_call_may_plan_for_a_subset_of_the_envs_each_keeping_its_warm_start() -> None:
    """Rows name envs: after a step of all three, a step of envs 2 and 0 (in that order)
    continues each one's own plan, as two agents planning alone do."""
    batch = agent(gradient())
    alone = [agent(gradient()) for _ in OBS]
    batch.act_batch(OBS)
    for e, single in enumerate(alone):
        single.act(OBS[e])
    actions = batch.act_batch(OBS[[2, 0]], envs=[2, 0])
    np.testing.assert_allclose(actions[0], alone[2].act(OBS[2]), rtol=0, atol=1e-4)
    np.testing.assert_allclose(actions[1], alone[0].act(OBS[0]), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="envs must name each of the 2 rows once"):
        batch.act_batch(OBS[:2], envs=[1, 1])
