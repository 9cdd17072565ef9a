"""PolicyLearner on a known linear model: the LQR optimum, termination, metrics, settings."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from agents.policy import Policy, PolicyAgent, PolicyLearner, PolicyProposal
from worldmodel.cost.trajectory import TrajectoryCost
from worldmodel.data.store import Stats
from worldmodel.forward.model import ForwardModel


class LinearModel(nn.Module):
    """Known dynamics x' = A x + B u, no latent: the 'world model' of the LQR test."""

    def __init__(self, a: Tensor, b: Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("b", b)

    def step(
        self, s: Tensor, a: Tensor, z: Tensor | None = None, generator: object = None
    ) -> Tensor:
        return s @ self.a.T + a @ self.b.T

    def sample_prior(self, *shape: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.zeros(*shape, 0)


def test_policy_learner_approaches_the_discounted_lqr_cost() -> None:
    """With the exact cost-to-go x'Px as terminal value the best stationary policy of the
    H-step objective is the LQR feedback u = -Kx, so its cost is the target."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([[1.0, 0.1], [0.0, 1.0]])
    b = torch.tensor([[0.005], [0.1]])
    q, r, gamma = torch.eye(2), 0.1, 0.95
    p = q.clone()
    for _ in range(2000):  # discounted Riccati iteration
        gain = gamma * (b.T @ p @ a) / (r + gamma * b.T @ p @ b)
        p = q + gamma * a.T @ p @ a - gamma * a.T @ p @ b @ gain
    model = LinearModel(a, b)

    def cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return ((obs @ q) * obs).sum(-1) + r * action.square().sum(-1)

    def value(states: Tensor) -> Tensor:
        return ((states @ p) * states).sum(-1)

    policy = Policy(2, 1, hidden=32)
    policy.set_normalization(
        Stats(torch.zeros(2), torch.full((2,), 0.2), torch.zeros(2), torch.ones(2))
    )
    objective = TrajectoryCost(cost, value=value, gamma=gamma)
    learner = PolicyLearner(policy, model, objective, horizon=5, lr=3e-3)
    test_states = torch.rand(512, 2, generator=g) * 0.6 - 0.3

    def objective(act: object) -> float:
        s, total = test_states, torch.zeros(len(test_states))
        for t in range(5):
            u = act(s)
            total = total + gamma**t * cost(s, u, s)
            s = model.step(s, u)
        return (total + gamma**5 * value(s)).mean().item()

    with torch.no_grad():
        initial = objective(policy)
        lqr = objective(lambda s: (-s @ gain.T).clamp(-1, 1))
    for _ in range(300):
        learner.update(torch.rand(256, 2, generator=g) * 0.6 - 0.3)
    with torch.no_grad():
        learned = objective(policy)
        huge = policy(torch.randn(100, 2, generator=g) * 1e4)
    assert learned < 1.02 * lqr, (initial, learned, lqr)
    assert initial - learned > 0.9 * (initial - lqr), (initial, learned, lqr)
    assert huge.abs().max() <= 1.0


def test_terminated_states_stop_accumulating_cost_and_terminal_value() -> None:
    model = LinearModel(torch.eye(2), torch.zeros(2, 1))
    gamma = 0.9

    def unit_cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return 1.0 + 0.0 * action.sum(-1)  # depends on the policy only formally

    def ten(states: Tensor) -> Tensor:
        return torch.full(states.shape[:-1], 10.0)

    def run(terminated: object) -> dict[str, float]:
        objective = TrajectoryCost(unit_cost, terminated, ten, gamma=gamma)  # type: ignore[arg-type]
        learner = PolicyLearner(Policy(2, 1), model, objective, horizon=4)
        return learner.update(torch.randn(8, 2))

    ended = run(lambda s: torch.ones(s.shape[:-1], dtype=torch.bool))
    assert ended["imagined_cost"] == pytest.approx(1.0)  # the terminating step itself is paid
    assert ended["terminal_value"] == pytest.approx(0.0)
    alive = run(None)
    assert alive["imagined_cost"] == pytest.approx(sum(gamma**t for t in range(4)))
    assert alive["terminal_value"] == pytest.approx(10 * gamma**4)


@pytest.mark.parametrize("bad", [{"horizon": 0}, {"lr": 0.0}, {"grad_clip": 0.0}])
def test_the_policy_learner_refuses_non_positive_settings(bad: dict) -> None:
    model = LinearModel(torch.eye(2), torch.ones(2, 1))
    with pytest.raises(ValueError):
        PolicyLearner(Policy(2, 1), model, TrajectoryCost(lambda s, a, s2: a.sum(-1)), **bad)


def test_updates_are_counted_and_seeded_learners_imagine_alike() -> None:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=2, hidden=8, layers=1, dropout=0.0)
    cost = TrajectoryCost(lambda s, a, s2: s2.square().sum(-1))
    learners = []
    for _ in range(2):
        torch.manual_seed(1)
        learners.append(PolicyLearner(Policy(2, 1), model, cost, horizon=3, seed=7))
    starts = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(learners[0].imagine(starts).z, learners[1].imagine(starts).z)
    for _ in range(3):
        metrics = learners[0].update(starts)
    assert learners[0].total_steps == 3 and learners[0].skipped_updates == 0
    assert metrics["grad_norm"] > 0 and {"loss", "imagined_cost", "action_abs"} <= set(metrics)
    cost.cost = lambda s, a, s2: s2.sum(-1) * float("nan")
    learners[0].update(starts)
    learners[0].update(starts)
    assert learners[0].skipped_updates == 2 and learners[0].total_steps == 3


def test_component_defaults_agree_with_the_configurator() -> None:
    """The Python API and `wm run` build the same policy by default (built, not read off the
    signature: a default is what a call without the argument gets)."""
    from agents.configurator.config import Config, PolicyConfig

    pc, config = PolicyConfig(), Config()
    policy = Policy(2, 1)
    widths = [m.out_features for m in policy.net if isinstance(m, nn.Linear)]
    assert widths == [pc.hidden] * pc.layers + [1]
    model = LinearModel(torch.eye(2), torch.ones(2, 1))
    learner = PolicyLearner(policy, model, TrajectoryCost(lambda s, a, s2: a.sum(-1)))
    assert learner.horizon == pc.horizon
    assert learner.generator.initial_seed() == config.seed
    assert PolicyAgent(policy).seed == config.seed
    assert PolicyProposal(policy, model).generator.initial_seed() == config.seed


def test_nothing_is_recorded_before_the_first_decision_or_update() -> None:
    torch.manual_seed(0)
    policy = Policy(2, 1, hidden=8)
    assert PolicyAgent(policy).last is None
    model = LinearModel(torch.eye(2), torch.ones(2, 1))
    learner = PolicyLearner(policy, model, TrajectoryCost(lambda s, a, s2: s2.square().sum(-1)))
    assert learner.last_rollout is None and learner.total_steps == learner.skipped_updates == 0


def test_a_one_step_horizon_and_a_small_grad_clip_are_accepted() -> None:
    torch.manual_seed(0)
    model = LinearModel(torch.eye(2), torch.ones(2, 1))
    cost = TrajectoryCost(lambda s, a, s2: 100.0 * s2.square().sum(-1))
    learner = PolicyLearner(Policy(2, 1, hidden=8), model, cost, horizon=1, grad_clip=0.5)
    starts = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    assert learner.imagine(starts).actions.shape[0] == 1
    metrics = learner.update(starts)
    assert metrics["grad_norm"] > 0.5  # reported before clipping to 0.5
    with pytest.raises(
        ValueError, match="^horizon, lr, grad_clip and latent_samples must be positive$"
    ):
        PolicyLearner(Policy(2, 1), model, cost, horizon=0)


def test_the_kept_rollout_holds_its_detached_terms() -> None:
    torch.manual_seed(0)
    model = LinearModel(torch.tensor([[1.0, 0.1], [0.0, 1.0]]), torch.tensor([[0.0], [0.1]]))

    def cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return next_obs.square().sum(-1) + action.square().sum(-1)

    learner = PolicyLearner(
        Policy(2, 1, hidden=8), model, TrajectoryCost(cost, gamma=0.9), horizon=3
    )
    learner.update(torch.randn(6, 2, generator=torch.Generator().manual_seed(0)))
    assert learner.last_rollout is not None
    trajectory, terms = learner.last_rollout
    expected = cost(trajectory.states[:-1], trajectory.actions, trajectory.states[1:])
    torch.testing.assert_close(terms.costs, expected)
    torch.testing.assert_close(terms.weights[:, 0], torch.tensor([1.0, 0.9, 0.81]))
    assert terms.value is None and terms.uncertainty is None
    assert not any(t.requires_grad for t in (terms.total, terms.costs, terms.weights, terms.alive))


def test_the_imagined_return_is_minus_the_undiscounted_cost_of_the_alive_steps() -> None:
    model = LinearModel(torch.eye(2), torch.zeros(2, 1))

    def two(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return 2.0 + 0.0 * action.sum(-1)

    def run(terminated: object) -> dict[str, float]:
        objective = TrajectoryCost(two, terminated, gamma=0.9)  # type: ignore[arg-type]
        learner = PolicyLearner(Policy(2, 1), model, objective, horizon=4)
        return learner.update(torch.randn(8, 2, generator=torch.Generator().manual_seed(0)))

    assert run(None)["imagined_return"] == pytest.approx(-8.0)  # 4 steps of 2, per trajectory
    ended = run(lambda s: torch.ones(s.shape[:-1], dtype=torch.bool))
    assert ended["imagined_return"] == pytest.approx(-2.0)  # the terminating step only
