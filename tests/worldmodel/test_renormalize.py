"""Renormalising to the statistics of more data keeps every learned function: the world models,
the learned cost and termination, the policy and the critic give the same outputs on the same raw
inputs before and after, and hold the new statistics."""

from __future__ import annotations

import pytest
import torch

from agents.policy import Policy
from worldmodel.cost.critic import Critic, CriticLearner
from worldmodel.cost.learned import CostStats, LearnedCost
from worldmodel.data.store import Stats
from worldmodel.forward.ensemble import EnsembleModel
from worldmodel.forward.model import ForwardModel
from worldmodel.optim import rescale_moments

S, A = 3, 2


def _stats(seed: int) -> Stats:
    g = torch.Generator().manual_seed(seed)
    rand = lambda: torch.rand(S, generator=g)  # noqa: E731
    # means a few units apart and stds a decade apart: what a swung-up pole does to the stats
    return Stats(4 * rand() - 2, 10 ** (2 * rand() - 1), rand() - 0.5, 10 ** (2 * rand() - 1))


def _scramble(module: torch.nn.Module) -> None:
    """Weights away from their initialisation (zero heads included), as training leaves them."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))


def _inputs(n: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return (
        3 * torch.randn(n, S, generator=g),
        torch.rand(n, A, generator=g) * 2 - 1,
        3 * torch.randn(n, S, generator=g),
    )


def _assert_holds(module, stats: Stats) -> None:
    for name in ("state_mean", "state_std"):
        assert torch.allclose(getattr(module, name), getattr(stats, name)), name


@pytest.mark.parametrize("latent_dim", [0, 4])
def test_the_forward_model_predicts_encodes_and_scales_the_same_after_renormalising(
    latent_dim: int,
) -> None:
    torch.manual_seed(0)
    model = ForwardModel(S, A, latent_dim=latent_dim, hidden=32, layers=2).eval()
    model.set_normalization(_stats(0))
    _scramble(model)
    s, a, s_next = _inputs()
    z = torch.randn(len(s), latent_dim)
    before = model.step(s, a, z)
    if latent_dim:
        posterior = model._posterior(s, a, s_next)
        scale = model.log_std.exp() * model.delta_std
    new = _stats(1)
    model.renormalize(new)
    _assert_holds(model, new)
    assert torch.allclose(model.delta_std, new.delta_std) and torch.allclose(
        model.delta_mean, new.delta_mean
    )
    assert torch.allclose(model.step(s, a, z), before, atol=1e-4, rtol=1e-4)
    if latent_dim:
        for x, y in zip(model._posterior(s, a, s_next), posterior, strict=True):
            assert torch.allclose(x, y, atol=1e-4, rtol=1e-4)
        assert torch.allclose(model.log_std.exp() * model.delta_std, scale, rtol=1e-5)


def test_the_forward_model_s_rollout_is_the_same_after_renormalising() -> None:
    torch.manual_seed(0)
    model = ForwardModel(S, A, latent_dim=2, hidden=32, layers=2).eval()
    model.set_normalization(_stats(0))
    _scramble(model)
    s, _, _ = _inputs()
    actions, z = torch.rand(6, len(s), A) * 2 - 1, torch.randn(6, len(s), 2)
    before = model.rollout(s, actions, z)
    model.renormalize(_stats(5))
    assert torch.allclose(model.rollout(s, actions, z), before, atol=1e-3, rtol=1e-4)


def test_the_ensemble_s_samples_are_the_same_after_renormalising() -> None:
    torch.manual_seed(0)
    model = EnsembleModel(S, A, members=3, hidden=32, layers=2).eval()
    model.set_normalization(_stats(0))
    _scramble(model)
    s, a, _ = _inputs()
    z = torch.randn(len(s), model.latent_dim)
    before = model.step(s, a, z)
    new = _stats(1)
    model.renormalize(new)
    _assert_holds(model, new)
    assert torch.allclose(model.step(s, a, z), before, atol=1e-4, rtol=1e-4)


def test_the_learned_cost_and_termination_are_the_same_after_renormalising() -> None:
    torch.manual_seed(0)
    cost = LearnedCost(S, A, hidden=32, layers=2, terminates=True)
    cost.set_normalization(_stats(0), CostStats(cost_mean=1.5, cost_std=0.2, terminal_share=0.1))
    _scramble(cost)
    s, a, s_next = _inputs()
    before, logit = cost(s, a, s_next), cost.termination_logit(s_next)
    new = _stats(1)
    cost.renormalize(new, CostStats(cost_mean=-3.0, cost_std=4.0, terminal_share=0.3))
    _assert_holds(cost, new)
    assert cost.cost_mean.item() == -3.0 and cost.cost_std.item() == 4.0
    assert torch.allclose(cost(s, a, s_next), before, atol=1e-4, rtol=1e-4)
    assert torch.allclose(cost.termination_logit(s_next), logit, atol=1e-4, rtol=1e-4)


def test_the_policy_and_both_critic_nets_are_the_same_after_renormalising() -> None:
    torch.manual_seed(0)
    policy, critic = Policy(S, A, hidden=32), Critic(S, hidden=32)
    policy.set_normalization(_stats(0))
    critic.set_normalization(_stats(0), value_scale=7.0)
    learner = CriticLearner(critic)
    _scramble(policy), _scramble(critic), _scramble(learner.target)
    s, _, _ = _inputs()
    actions, value, target = policy(s), critic(s), learner.value(s)
    new = _stats(1)
    policy.renormalize(new)
    learner.renormalize(new)
    for module in (policy, critic, learner.target):
        _assert_holds(module, new)
    assert critic.value_scale.item() == 7.0
    assert torch.allclose(policy(s), actions, atol=1e-5)
    assert torch.allclose(critic(s), value, atol=1e-4, rtol=1e-4)
    assert torch.allclose(learner.value(s), target, atol=1e-4, rtol=1e-4)


def test_an_input_that_was_constant_gets_a_zero_column_not_one_blown_up() -> None:
    torch.manual_seed(0)
    policy = Policy(S, A, hidden=32)
    old = _stats(0)
    old.state_std[0] = 1e-6  # the store's floor: dim 0 never varied in the seed data
    policy.set_normalization(old)
    _scramble(policy)
    s, _, _ = _inputs()
    s[:, 0] = old.state_mean[0]  # where all the old data was
    before = policy(s)
    policy.renormalize(_stats(1))
    first = policy.net[0].weight
    assert torch.all(first[:, 0] == 0) and torch.all(first[:, 1:] != 0)
    assert torch.allclose(policy(s), before, atol=1e-5)


def test_adam_s_moments_follow_weights_rescaled_by_k_and_vanish_on_zeroed_ones() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight[0, 2] = 0.0  # an exact zero keeps its moments (k unknown, taken as 1)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(8, 3)).square().sum().backward()
        opt.step()
    with torch.no_grad():
        layer.weight[0, 2] = 0.0
    m, v = (opt.state[layer.weight][k].clone() for k in ("exp_avg", "exp_avg_sq"))
    bias_m = opt.state[layer.bias]["exp_avg"].clone()
    before = {layer.weight: layer.weight.detach().clone()}
    k = torch.tensor([[2.0, 0.5, 3.0], [0.0, 4.0, 0.25]])
    with torch.no_grad():
        layer.weight.mul_(k)
        layer.bias.add_(1.0)
    rescale_moments(opt, before)
    want_k = torch.tensor([[2.0, 0.5, 1.0], [1.0, 4.0, 0.25]])
    live = torch.tensor([[True, True, True], [False, True, True]])
    state = opt.state[layer.weight]
    assert torch.allclose(state["exp_avg"], torch.where(live, m / want_k, 0.0))
    assert torch.allclose(state["exp_avg_sq"], torch.where(live, v / want_k**2, 0.0))
    assert torch.equal(opt.state[layer.bias]["exp_avg"], bias_m)  # not passed: kept
