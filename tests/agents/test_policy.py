"""Policy learning through a model fitted on data: epistemic uncertainty on and off the data,
the uncertainty penalty, frozen model weights, and the agent / planner proposal along the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from agents.policy import Policy, PolicyAgent, PolicyLearner, PolicyProposal
from worldmodel.cost.trajectory import TrajectoryCost
from worldmodel.cost.uncertainty import UncertaintyPenalty
from worldmodel.data.store import EpisodeStore
from worldmodel.forward.fit import ModelTrainer
from worldmodel.forward.model import ForwardModel

# Data system: a damped 2-D linear system started inside [-1, 1]^2, driven by small actions
# (|a| <= A_MAX), so that both large states and large actions lie off the data.
A_DATA = np.array([[0.9, 0.1], [0.0, 0.9]], np.float32)
B_DATA = np.array([[0.0], [0.1]], np.float32)
A_MAX = 0.3
HORIZON = 5


@pytest.fixture(scope="module")
def data_and_model() -> tuple[EpisodeStore, ForwardModel]:
    """A small MC-dropout model fitted on the data system's random rollouts."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    store = EpisodeStore(2, 1)
    for _ in range(100):
        x, obs, act, nxt = rng.uniform(-1, 1, 2).astype(np.float32), [], [], []
        for _ in range(10):
            a = rng.uniform(-A_MAX, A_MAX, 1).astype(np.float32)
            obs.append(x), act.append(a)
            x = A_DATA @ x + B_DATA @ a
            nxt.append(x)
        no = np.zeros(10, bool)
        store.add_episode(np.array(obs), np.array(act), np.zeros(10), np.array(nxt), no, no)
    model = ForwardModel(2, 1, latent_dim=0, hidden=64, layers=2, dropout=0.1)
    model.set_normalization(store.stats())
    trainer = ModelTrainer(model, lr=3e-3, seed=0)
    for _ in range(300):
        trainer.update(store.sample(64, 3, trainer.rng))
    torch.set_num_threads(before)
    return store, model.eval()


def states_at_radius(radius: float, n: int, g: torch.Generator) -> Tensor:
    direction = torch.randn(n, 2, generator=g)
    return direction / direction.norm(dim=-1, keepdim=True) * radius


def test_uncertainty_is_higher_off_the_data_than_on_it(
    data_and_model: tuple[EpisodeStore, ForwardModel],
) -> None:
    _, model = data_and_model
    g = torch.Generator().manual_seed(1)
    actions = (torch.rand(HORIZON, 256, 1, generator=g) * 2 - 1) * A_MAX
    inside = torch.rand(256, 2, generator=g) * 1.6 - 0.8
    outside = states_at_radius(4.0, 256, g)  # ~7 data standard deviations from the centre
    u_in = model.uncertainty(inside, actions, n=8).mean().item()
    u_out = model.uncertainty(outside, actions, n=8).mean().item()
    assert u_out > 2.0 * u_in, f"uncertainty inside {u_in:.2e}, outside {u_out:.2e}"


def test_uncertainty_penalty_is_near_zero_on_the_data_and_large_off_it(
    data_and_model: tuple[EpisodeStore, ForwardModel],
) -> None:
    store, model = data_and_model
    g = torch.Generator().manual_seed(2)
    penalty = UncertaintyPenalty(model, masks=8, threshold=1.0)
    with pytest.raises(RuntimeError, match="calibrate"):
        penalty(torch.zeros(HORIZON, 1))
    stats = penalty.calibrate(store.windows(store.window_starts(HORIZON), HORIZON), g)
    assert penalty.horizon == HORIZON and stats["std"] > 0

    actions = (torch.rand(HORIZON, 256, 1, generator=g) * 2 - 1) * A_MAX
    inside = torch.rand(256, 2, generator=g) * 1.6 - 0.8
    p_in = penalty(penalty.raw(inside, actions)).mean().item()
    p_out = penalty(penalty.raw(states_at_radius(4.0, 256, g), actions)).mean().item()
    assert p_in < 0.3 and p_out > 1.0, f"penalty inside {p_in:.3f}, outside {p_out:.3f}"
    with pytest.raises(ValueError, match="calibrated on"):
        penalty(torch.zeros(HORIZON + 1, 1))


def test_uncertainty_penalty_keeps_the_policy_near_the_data(
    data_and_model: tuple[EpisodeStore, ForwardModel],
) -> None:
    """A cost rewarding large x[1] asks for a = 1, far beyond the data's |a| <= 0.3; the penalty
    keeps the policy near the edge of what the model has seen."""
    store, model = data_and_model
    g = torch.Generator().manual_seed(3)
    penalty = UncertaintyPenalty(model, masks=4, threshold=0.5)
    penalty.calibrate(store.windows(store.window_starts(HORIZON), HORIZON), g)
    start = torch.from_numpy(store.data["obs"])

    def cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return -next_obs[..., 1]

    metrics = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        policy = Policy(2, 1, hidden=32)
        policy.set_normalization(store.stats())
        objective = TrajectoryCost(cost, gamma=0.99, penalty=penalty, penalty_weight=weight)
        learner = PolicyLearner(policy, model, objective, horizon=HORIZON, lr=3e-3, seed=0)
        for _ in range(60):
            metrics[weight] = learner.update(start[torch.randint(len(start), (128,), generator=g)])
    assert metrics[0.0]["action_abs"] > 0.9, metrics
    assert metrics[1.0]["action_abs"] < 0.5, metrics
    assert metrics[1.0]["uncertainty_penalty"] < 0.5 * metrics[0.0]["uncertainty_penalty"]


def test_update_moves_only_the_policy_and_skips_non_finite_losses(
    data_and_model: tuple[EpisodeStore, ForwardModel],
) -> None:
    store, model = data_and_model
    model.train()  # the trainer's mode must survive a policy update
    model.zero_grad(set_to_none=True)
    penalty = UncertaintyPenalty(model, masks=4)
    penalty.calibrate(store.windows(store.window_starts(HORIZON), HORIZON))
    model_before = [x.clone() for x in model.parameters()]

    def cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return next_obs.square().sum(-1)

    policy = Policy(2, 1, hidden=16)
    objective = TrajectoryCost(
        cost, lambda s: s[..., 0] > 0.9, gamma=0.99, penalty=penalty, penalty_weight=0.5
    )
    learner = PolicyLearner(policy, model, objective, horizon=HORIZON, lr=1e-2)
    policy_before = [x.clone() for x in policy.parameters()]
    metrics = learner.update(torch.from_numpy(store.data["obs"][:64]))
    assert all(np.isfinite(v) for v in metrics.values())
    assert {"loss", "imagined_cost", "imagined_return", "uncertainty"} <= metrics.keys()
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    assert all(x.grad is None for x in model.parameters())
    assert all(torch.equal(x, y) for x, y in zip(model_before, model.parameters(), strict=True))
    assert any(
        not torch.equal(x, y) for x, y in zip(policy_before, policy.parameters(), strict=True)
    )
    assert learner.last_rollout is not None
    assert learner.last_rollout[0].states.shape == (HORIZON + 1, 64, 2)

    objective.cost = lambda o, a, n: torch.full(o.shape[:-1], float("nan"))
    policy_before = [x.clone() for x in policy.parameters()]
    assert learner.update(torch.zeros(4, 2)) == {"skipped_updates": 1.0}
    assert all(torch.equal(x, y) for x, y in zip(policy_before, policy.parameters(), strict=True))


def test_agent_and_proposal_follow_the_policy_within_bounds(
    data_and_model: tuple[EpisodeStore, ForwardModel],
) -> None:
    _, model = data_and_model
    torch.manual_seed(0)
    policy = Policy(2, 1, hidden=16)
    with torch.no_grad():
        policy.net[-1].weight.mul_(100.0)  # saturate: outputs must still stay in the box
    obs = np.array([0.3, -0.2], np.float32)
    action = PolicyAgent(policy).act(obs)
    assert action.dtype == np.float32 and action.shape == (1,)
    assert np.abs(action).max() <= 1.0
    with torch.no_grad():
        np.testing.assert_allclose(action, policy(torch.from_numpy(obs)).numpy())
    noisy = [PolicyAgent(policy, noise=0.5, seed=3).act(obs) for _ in range(2)]
    np.testing.assert_array_equal(noisy[0], noisy[1])
    assert np.abs(noisy[0]).max() <= 1.0

    plan = PolicyProposal(policy, model, latent="zero")(torch.from_numpy(obs), 6)
    assert plan.shape == (6, 1) and plan.abs().max() <= 1.0
    with torch.no_grad():
        s = torch.from_numpy(obs)[None]
        for t in range(6):
            torch.testing.assert_close(plan[t], policy(s)[0])
            s = model.step(s, plan[t][None], torch.zeros(1, 0))


def test_uncertainty_metrics_are_means_over_the_alive_steps(
    data_and_model: tuple[EpisodeStore, ForwardModel],
) -> None:
    store, model = data_and_model
    penalty = UncertaintyPenalty(model, masks=4, threshold=0.0)
    penalty.calibrate(
        store.windows(store.window_starts(HORIZON), HORIZON), torch.Generator().manual_seed(0)
    )

    def cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return next_obs.square().sum(-1)

    def run(terminated: object, starts: Tensor) -> tuple[dict[str, float], object]:
        torch.manual_seed(0)
        objective = TrajectoryCost(
            cost,
            terminated,  # type: ignore[arg-type]
            gamma=0.99,
            penalty=penalty,
            penalty_weight=0.5,
        )
        learner = PolicyLearner(Policy(2, 1, hidden=16), model, objective, horizon=HORIZON)
        metrics = learner.update(starts)
        assert learner.last_rollout is not None
        return metrics, learner.last_rollout[1]

    starts = torch.from_numpy(store.data["obs"][:64]) * 1.5
    metrics, terms = run(lambda s: s[..., 0] > 0.9, starts)
    reached = terms.alive[:HORIZON] > 0
    assert 0 < (~reached).sum() < reached.numel() // 2  # some steps come after a termination
    assert metrics["uncertainty"] == pytest.approx(terms.uncertainty[reached].mean().item())
    assert metrics["uncertainty_penalty"] == pytest.approx(terms.penalty[reached].mean().item())
    # One trajectory that ends on its first step: the mean is over that single step.
    metrics, terms = run(lambda s: torch.ones(s.shape[:-1], dtype=torch.bool), starts[:1])
    assert metrics["uncertainty"] == pytest.approx(terms.uncertainty[0, 0].item())
    assert metrics["uncertainty_penalty"] == pytest.approx(terms.penalty[0, 0].item())
