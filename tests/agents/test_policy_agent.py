"""Policy, PolicyAgent and PolicyProposal: noise, fallbacks, latents, sizes, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from agents.policy import Policy, PolicyAgent, PolicyProposal
from worldmodel.data.store import Stats
from worldmodel.forward.model import ForwardModel


class Switchable(Policy):
    """A policy whose output can be made NaN, to exercise the agent's fallback."""

    broken = False

    def forward(self, states: Tensor) -> Tensor:
        out = super().forward(states)
        return out * float("nan") if self.broken else out


def test_policy_agent_adds_seeded_noise_clips_and_records_its_decision() -> None:
    torch.manual_seed(0)
    policy = Policy(2, 3, hidden=8)
    obs = np.array([0.2, -0.4], np.float32)
    with torch.no_grad():
        clean = policy(torch.from_numpy(obs)).numpy()
    agent = PolicyAgent(policy, noise=0.3, seed=5)
    draws = np.random.default_rng(5).standard_normal((4, 3))
    for draw in draws:
        action = agent.act(obs)
        np.testing.assert_allclose(action, np.clip(clean + 0.3 * draw, -1, 1), rtol=1e-6)
        assert agent.last is not None and np.array_equal(agent.last.action, action)
        assert np.isnan(agent.last.planned_cost) and np.isnan(agent.last.planned_step_cost)
        assert 0 < agent.last.seconds < 1 and not agent.last.fallback
    quiet = PolicyAgent(policy, seed=5)
    np.testing.assert_allclose(quiet.act(obs), clean, rtol=1e-6)
    assert quiet.rng.bit_generator.state == np.random.default_rng(5).bit_generator.state
    loud = PolicyAgent(policy, noise=100.0, seed=0)
    actions = np.stack([loud.act(obs) for _ in range(20)])
    assert actions.min() == -1.0 and actions.max() == 1.0  # both ends of the box, no further
    assert PolicyAgent.horizon == 1 and set(loud.generators()) == {"noise"}
    with pytest.raises(ValueError, match="^noise must be >= 0, got -0.1$"):
        PolicyAgent(policy, noise=-0.1)


def test_policy_agent_falls_back_to_its_previous_action_then_zero() -> None:
    torch.manual_seed(0)
    policy = Switchable(2, 1, hidden=8)
    obs = np.array([0.2, -0.4], np.float32)
    agent = PolicyAgent(policy)
    policy.broken = True
    zero = agent.act(obs)
    assert zero.dtype == np.float32  # the documented action dtype, fallback or not
    np.testing.assert_array_equal(zero, np.zeros(1, np.float32))
    assert agent.last.fallback and agent.fallbacks == 1
    policy.broken = False
    good = agent.act(obs)
    assert not agent.last.fallback and np.abs(good).max() > 0
    policy.broken = True
    np.testing.assert_array_equal(agent.act(obs), good)
    assert agent.fallbacks == 2
    agent.reset()
    assert agent.last is None
    np.testing.assert_array_equal(agent.act(obs), np.zeros(1, np.float32))  # forgot `good`


def test_prior_proposals_are_seeded_draws_and_zero_ones_the_mean_future() -> None:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=3, hidden=16, layers=1, dropout=0.0).eval()
    with torch.no_grad():
        model.decoder[0].weight.mul_(20.0)  # z matters to the prediction
    policy = Policy(2, 1, hidden=8)
    with torch.no_grad():
        policy.net[-1].weight.mul_(50.0)  # and the state to the action
    state = torch.tensor([0.3, -0.2])
    zero = PolicyProposal(policy, model, latent="zero")(state, 5)
    first = PolicyProposal(policy, model, latent="prior", seed=1)(state, 5)
    again = PolicyProposal(policy, model, latent="prior", seed=1)(state, 5)
    other = PolicyProposal(policy, model, latent="prior", seed=2)(state, 5)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other) and not torch.allclose(first, zero)
    torch.testing.assert_close(zero[0], first[0])  # the first action is the policy's at s0
    # By default the proposal is the mean future, as `wm run --agent mpc+policy` uses it.
    torch.testing.assert_close(PolicyProposal(policy, model)(state, 5), zero)
    with pytest.raises(ValueError, match="latent"):
        PolicyProposal(policy, model, latent="mean")


@pytest.mark.parametrize("dims", [(0, 1, 8, 1), (2, 0, 8, 1), (2, 1, 0, 1), (2, 1, 8, 0)])
def test_a_policy_needs_positive_sizes(dims: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        Policy(*dims)


def test_the_policy_normalises_raw_states() -> None:
    """A policy normalised by (mean m, std s), at m + s x, is the unnormalised one at x."""
    torch.manual_seed(0)
    plain = Policy(3, 2, hidden=16)
    with torch.no_grad():
        plain.net[-1].weight.normal_()  # the action depends clearly on the state
    normalised = Policy(3, 2, hidden=16)
    normalised.load_state_dict(plain.state_dict())
    mean, std = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 3.0, 2.0])
    normalised.set_normalization(Stats(mean, std, torch.zeros(3), torch.ones(3)))
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(normalised(mean + std * x), plain(x))


def test_fallbacks_are_logged_on_the_1st_2nd_4th_and_8th_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.manual_seed(0)
    policy = Switchable(2, 1, hidden=8)
    obs = np.array([0.2, -0.4], np.float32)
    agent = PolicyAgent(policy)
    policy.broken = True
    with caplog.at_level("WARNING", logger="agents.policy"):
        agent.act(obs)  # no previous action yet: zero
        policy.broken = False
        agent.act(obs)
        policy.broken = True
        for _ in range(8):
            agent.act(obs)
    assert agent.fallbacks == 9
    assert [r.getMessage() for r in caplog.records] == [
        "policy: non-finite action; used the zero action instead (1 fallbacks so far)",
        "policy: non-finite action; used the previous action instead (2 fallbacks so far)",
        "policy: non-finite action; used the previous action instead (4 fallbacks so far)",
        "policy: non-finite action; used the previous action instead (8 fallbacks so far)",
    ]
