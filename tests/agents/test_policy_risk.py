"""PolicyLearner over sampled futures: K latent draws per start state, combined by a risk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from agents.policy import Policy, PolicyLearner
from worldmodel.cost.risk import MEAN, Risk
from worldmodel.cost.trajectory import TrajectoryCost


class MultiplicativeNoise(nn.Module):
    """s' = a (1 + 2 z), z ~ N(0, 1): the larger the action, the wider its futures."""

    state_dim, action_dim = 1, 1

    def step(
        self, s: Tensor, a: Tensor, z: Tensor | None = None, generator: object = None
    ) -> Tensor:
        assert z is not None
        return a * (1 + 2 * z)

    def sample_prior(self, *shape: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(*shape, 1, generator=generator)


def minus_next_state(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    return -next_obs[..., 0]


def constant_policy(action: float) -> Policy:
    """A policy that answers `action` (through its tanh) everywhere."""
    policy = Policy(1, 1, hidden=4, layers=1)
    policy.net[-1].weight.data.zero_()
    policy.net[-1].bias.data.fill_(float(np.arctanh(action)))
    return policy


def learner(policy: Policy, samples: int, risk: Risk, seed: int = 0) -> PolicyLearner:
    cost = TrajectoryCost(minus_next_state)
    return PolicyLearner(policy, MultiplicativeNoise(), cost, horizon=1, lr=0.05,
                         latent_samples=samples, risk=risk, seed=seed)  # fmt: skip


@pytest.mark.parametrize("risk", [MEAN, Risk("cvar", 0.25)], ids=["mean", "cvar"])
def test_the_loss_combines_each_start_states_futures_by_the_risk(risk: Risk) -> None:
    """The loss is the risk over the K = 8 futures of each of B = 3 start states, then the mean
    over start states, with each future's cost -a (1 + 2 z) from the learner's own z draws
    (copy k of start state b at batch index k * B + b)."""
    a, samples, batch = 0.5, 8, 3
    z = torch.randn(1, samples * batch, 1, generator=torch.Generator().manual_seed(7))[0, :, 0]
    costs = (-a * (1 + 2 * z)).view(samples, batch).double().numpy()
    if risk.kind == "mean":
        expected = costs.mean(0).mean()
    else:
        expected = np.sort(costs, axis=0)[-2:].mean(0).mean()  # the worst 2 of 8 per state
    metrics = learner(constant_policy(a), samples, risk, seed=7).update(torch.zeros(batch, 1))
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)


def test_a_cvar_policy_avoids_the_wide_futures_a_mean_policy_seeks() -> None:
    """The mean cost -a is least at the largest action; the CVaR of the worst quarter,
    about 1.5 |a| here, at a = 0. Trained alike, the two policies end at opposite answers."""
    answers = {}
    for name, risk in (("mean", MEAN), ("cvar", Risk("cvar", 0.25))):
        torch.manual_seed(0)
        trainer = learner(Policy(1, 1, hidden=8, layers=1), 16, risk)
        for _ in range(300):
            trainer.update(torch.zeros(32, 1))
        answers[name] = trainer.policy(torch.zeros(1, 1)).item()
    assert answers["mean"] > 0.9
    assert abs(answers["cvar"]) < 0.1


def test_one_future_per_state_and_the_mean_are_the_defaults() -> None:
    trainer = PolicyLearner(Policy(1, 1), MultiplicativeNoise(), TrajectoryCost(minus_next_state))
    assert trainer.latent_samples == 1 and trainer.risk == MEAN
    with pytest.raises(ValueError, match="latent_samples must be positive"):
        learner(Policy(1, 1), 0, MEAN)
