"""worldmodel.cost.learned: the learned cost and termination, against known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from worldmodel.cost.learned import CostStats, LearnedCost
from worldmodel.data.store import EpisodeStore
from worldmodel.forward.fit import FitSchedule, ModelTrainer, fit_world_model


def true_cost(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """A cost with a state term, an action term and a change-over-the-step term."""
    return next_obs[:, 0] ** 2 + 0.1 * action[:, 0] ** 2 - 2.0 * (next_obs[:, 1] - obs[:, 1])


def transitions(n: int, seed: int) -> EpisodeStore:
    """n one-step episodes of a 2-state, 1-action system; an episode terminates where
    next_obs[1] > 0.8 (about 10 % of them) and is truncated otherwise."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (n, 2))
    action = rng.uniform(-1, 1, (n, 1))
    next_obs = obs + 0.2 * np.concatenate([action, rng.uniform(-1, 1, (n, 1))], axis=1)
    done = next_obs[:, 1] > 0.8
    store = EpisodeStore(2, 1)
    for i in range(n):
        store.add_episode(obs[i : i + 1], action[i : i + 1],
                          -true_cost(obs[i : i + 1], action[i : i + 1], next_obs[i : i + 1]),
                          next_obs[i : i + 1], done[i : i + 1], ~done[i : i + 1])  # fmt: skip
    return store


def fitted(store: EpisodeStore, seed: int = 0) -> LearnedCost:
    torch.manual_seed(seed)
    cost = LearnedCost(2, 1, hidden=64, layers=2)
    cost.set_normalization(store.stats(), CostStats.of(store))
    trainer = ModelTrainer(cost, lr=3e-3, seed=seed)
    schedule = FitSchedule(horizon=1, batch_size=256, max_steps=1500, eval_every=100, patience=50)
    fit_world_model(trainer, store, schedule, seed=seed)
    return cost.eval()


def test_cost_statistics_are_minus_the_rewards_and_the_share_of_terminations() -> None:
    store = EpisodeStore(1, 1)
    store.add_episode(np.zeros((4, 1)), np.zeros((4, 1)), np.array([1.0, 2.0, 3.0, 6.0]),
                      np.zeros((4, 1)), np.array([0, 0, 0, 1]), np.zeros(4))  # fmt: skip
    stats = CostStats.of(store)
    assert stats.cost_mean == pytest.approx(-3.0)
    assert stats.cost_std == pytest.approx(np.std([1.0, 2.0, 3.0, 6.0]))
    assert stats.terminal_share == 0.25
    with pytest.raises(ValueError, match="at least one transition"):
        CostStats.of(EpisodeStore(1, 1))


def test_positives_are_weighted_by_the_odds_of_a_termination_capped_at_1000() -> None:
    cost = LearnedCost(2, 1)
    stats = transitions(10, 0).stats()
    for share, weight in ((0.25, 3.0), (0.01, 99.0), (1e-5, 1000.0), (0.0, 1.0)):
        cost.set_normalization(stats, CostStats(0.0, 1.0, share))
        assert cost.pos_weight.item() == pytest.approx(weight)


def test_a_fitted_cost_and_termination_predict_held_out_transitions() -> None:
    """The learned cost explains 99 % of the held-out cost's variance and the termination
    classifier finds 95 % of the held-out terminations at 95 % accuracy."""
    cost = fitted(transitions(3000, seed=1))
    test = transitions(1000, seed=2).data
    obs, action, next_obs = (torch.from_numpy(test[k]) for k in ("obs", "action", "next_obs"))
    with torch.no_grad():
        predicted = cost(obs, action, next_obs).numpy()
        terminal = cost.terminated(next_obs).numpy()
    target = -test["reward"]
    assert np.mean((predicted - target) ** 2) < 0.01 * np.var(target)
    done = test["terminated"]
    assert (terminal == done).mean() > 0.95
    assert terminal[done].mean() > 0.95


def test_the_cost_is_differentiable_in_states_and_actions_and_broadcasts() -> None:
    cost = LearnedCost(2, 1, hidden=8, layers=1)
    obs = torch.randn(5, 4, 2, requires_grad=True)
    action = torch.randn(5, 4, 1, requires_grad=True)
    next_obs = torch.randn(5, 4, 2, requires_grad=True)
    value = cost(obs, action, next_obs)
    assert value.shape == (5, 4)
    grads = torch.autograd.grad(value.sum(), (obs, action, next_obs))
    assert all(g.abs().sum() > 0 for g in grads)
    # One action for every row of a batch gives each row's cost with that action.
    shared = cost(obs[0], action[0, :1], next_obs[0])
    assert torch.allclose(shared, cost(obs[0], action[0, :1].expand(4, 1), next_obs[0]))


def test_outputs_are_denormalised_and_the_loss_is_the_formula() -> None:
    """With both heads' last layers set to a constant, the cost is that constant in units of
    the data's cost std around its mean, and the loss is the scaled squared error plus the
    weighted cross-entropy of that logit."""
    cost = LearnedCost(2, 1, hidden=8, layers=1)
    store = transitions(50, 0)
    stats = CostStats(cost_mean=1.5, cost_std=2.0, terminal_share=0.2)
    cost.set_normalization(store.stats(), stats)
    for net, bias in ((cost.cost_net, 0.5), (cost.termination_net, -1.0)):
        net[-1].weight.data.zero_()
        net[-1].bias.data.fill_(bias)
    window = store.sample(20, 1, np.random.default_rng(0))
    assert torch.allclose(cost(window.obs[0], window.action[0], window.obs[1]),
                          torch.full((20,), 1.5 + 2.0 * 0.5))  # fmt: skip
    terms = cost.loss(window)
    target = (-window.reward - 1.5) / 2.0
    expected_cost = (0.5 - target).square().mean()
    expected_termination = F.binary_cross_entropy_with_logits(
        torch.full((1, 20), -1.0), window.terminated.float(), pos_weight=torch.tensor(4.0)
    )
    assert terms.cost_error.item() == pytest.approx(expected_cost.item(), rel=1e-6)
    assert terms.termination.item() == pytest.approx(expected_termination.item(), rel=1e-6)
    assert terms.loss.item() == pytest.approx((expected_cost + expected_termination).item())
    assert terms.metrics() == {
        "cost_error": terms.cost_error.item(),
        "termination": terms.termination.item(),
    }
    assert not cost.terminated(window.obs[1]).any()  # log-odds -1 < 0


def test_without_a_classifier_there_is_no_termination_and_no_termination_loss() -> None:
    cost = LearnedCost(2, 1, hidden=8, layers=1, terminates=False)
    assert cost.terminated is None and cost.termination_net is None
    terms = cost.loss(transitions(20, 0).sample(8, 1, np.random.default_rng(0)))
    assert terms.termination.item() == 0.0 and terms.loss.item() == terms.cost_error.item()
    with pytest.raises(ValueError, match="no termination classifier"):
        cost.termination_logit(torch.zeros(2))


def test_normalisation_travels_with_the_state_dict() -> None:
    cost = LearnedCost(2, 1, hidden=8, layers=1)
    store = transitions(50, 0)
    cost.set_normalization(store.stats(), CostStats(1.5, 2.0, 0.2))
    again = LearnedCost(2, 1, hidden=8, layers=1)
    again.load_state_dict(cost.state_dict())
    x = torch.randn(3, 2), torch.randn(3, 1), torch.randn(3, 2)
    assert torch.equal(again(*x), cost(*x))
    assert again.pos_weight.item() == 4.0 and again.cost_std.item() == 2.0


@pytest.mark.parametrize(
    "args", [(0, 1), (2, 0), (2, 1, 0)], ids=["state_dim", "action_dim", "hidden"]
)
def test_sizes_below_one_are_refused(args: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        LearnedCost(*args)


def test_the_gradient_planner_finds_the_best_action_through_a_learned_cost() -> None:
    """s' = s + 0.5 a with reward -s'^2: a cost learned from random transitions, planned
    through by gradient descent on the action, puts s' at 0 (a = -2 s), as the exact cost does."""
    from agents.planners import GradientPlanner
    from worldmodel.cost.trajectory import Trajectory, TrajectoryCost

    rng = np.random.default_rng(0)
    n = 4000
    obs, action = rng.uniform(-1, 1, (n, 1)), rng.uniform(-1, 1, (n, 1))
    next_obs = obs + 0.5 * action
    store = EpisodeStore(1, 1)
    no = np.zeros(n, bool)
    store.add_episode(obs, action, -(next_obs[:, 0] ** 2), next_obs, no, no)
    torch.manual_seed(0)
    cost = LearnedCost(1, 1, hidden=64, layers=2, terminates=False)
    cost.set_normalization(store.stats(), CostStats.of(store))
    schedule = FitSchedule(horizon=1, batch_size=256, max_steps=1500, eval_every=100, patience=50)
    fit_world_model(ModelTrainer(cost, lr=3e-3, seed=0), store, schedule, seed=0)
    cost.eval()
    objective_of = TrajectoryCost(cost)
    planner = GradientPlanner(1, -1.0, 1.0, action_dim=1, iterations=60, candidates=4, lr=0.05)
    for s in (-0.3, 0.2, 0.4):
        s0 = torch.tensor([[s]])

        def objective(actions: torch.Tensor, s0: torch.Tensor = s0) -> torch.Tensor:
            start = s0.expand(actions.shape[1], 1)
            states = torch.stack([start, start + 0.5 * actions[0]])
            return objective_of(Trajectory(states, actions, actions[:, :, :0])).total

        plan = planner.plan(objective, generator=torch.Generator().manual_seed(0))
        assert plan.actions[0, 0].item() == pytest.approx(-2 * s, abs=0.1), s
