"""The learned mixture prior: its density, its samples, its KL, and its place in the CVAE."""

import pytest
import torch
from torch import distributions as D

from worldmodel.data.store import Window
from worldmodel.forward.model import ForwardModel
from worldmodel.forward.prior import MixturePrior, gaussian_kl


def _mixture(means: list[list[float]], stds: list[list[float]], logits: list[float]):
    prior = MixturePrior(len(means), len(means[0]))
    with torch.no_grad():
        prior.means.copy_(torch.tensor(means))
        prior.log_stds.copy_(torch.tensor(stds).log())
        prior.logits.copy_(torch.tensor(logits))
    return prior


def test_one_component_is_a_diagonal_normal() -> None:
    prior = _mixture([[0.5, -1.0]], [[2.0, 0.3]], [0.7])
    z = torch.randn(5, 7, 2, generator=torch.Generator().manual_seed(0))
    expected = D.Normal(torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.3])).log_prob(z).sum(-1)
    torch.testing.assert_close(prior.log_prob(z), expected)


def test_the_density_is_the_weighted_mixture() -> None:
    means, stds, logits = [[-2.0, 0.0], [1.0, 1.5]], [[0.5, 1.0], [1.2, 0.4]], [0.3, -0.4]
    prior = _mixture(means, stds, logits)
    reference = D.MixtureSameFamily(
        D.Categorical(logits=torch.tensor(logits)),
        D.Independent(D.Normal(torch.tensor(means), torch.tensor(stds)), 1),
    )
    z = 3 * torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(prior.log_prob(z), reference.log_prob(z))


def test_samples_follow_the_weights_and_the_components() -> None:
    prior = _mixture([[-5.0], [5.0]], [[0.5], [1.0]], [0.0, torch.log(torch.tensor(3.0)).item()])
    z = prior.sample(20, 500, generator=torch.Generator().manual_seed(2))
    assert z.shape == (20, 500, 1)
    right = z[z > 0]
    assert (z > 0).float().mean().item() == pytest.approx(0.75, abs=0.01)
    assert right.mean().item() == pytest.approx(5.0, abs=0.05)
    assert right.std().item() == pytest.approx(1.0, abs=0.03)
    assert z[z < 0].std().item() == pytest.approx(0.5, abs=0.03)


def test_samples_are_seeded_and_reparameterised() -> None:
    prior = _mixture([[-1.0, 0.0], [1.0, 2.0]], [[1.0, 1.0], [0.5, 0.5]], [0.0, 0.0])
    first = prior.sample(3, 4, generator=torch.Generator().manual_seed(3))
    again = prior.sample(3, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, again)
    first.sum().backward()
    assert prior.means.grad.abs().sum() > 0 and prior.log_stds.grad.abs().sum() > 0


def test_the_sampled_kl_averages_to_the_closed_form() -> None:
    g = torch.Generator().manual_seed(4)
    mu, logvar = torch.randn(8, 3, generator=g), 0.5 * torch.randn(8, 3, generator=g)
    standard = _mixture([[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]], [0.0])
    noise = torch.randn(20000, 8, 3, generator=g)
    sampled = gaussian_kl(mu.expand(20000, 8, 3), logvar.expand(20000, 8, 3), noise, standard)
    exact = gaussian_kl(mu, logvar, noise[0], None)
    q = D.Normal(mu, (0.5 * logvar).exp())
    reference = D.kl_divergence(q, D.Normal(torch.zeros(3), torch.ones(3))).sum(-1)
    torch.testing.assert_close(exact, reference)
    torch.testing.assert_close(sampled.mean(0), exact, atol=0.05, rtol=0.0)


def test_fitted_to_a_bimodal_posterior_it_leaves_the_gap_empty() -> None:
    # The aggregate posterior of a two-way future: z near -1 or +1. N(0, I) would put a fifth of
    # its mass in |z| < 0.25; a fitted mixture puts its components on the clusters.
    torch.manual_seed(0)
    prior = MixturePrior(4, 1)
    g = torch.Generator().manual_seed(5)
    optimizer = torch.optim.Adam(prior.parameters(), lr=3e-2)
    for _ in range(800):
        mu = torch.where(torch.rand(256, 1, generator=g) < 0.5, -1.0, 1.0)
        logvar = torch.full_like(mu, 2 * torch.log(torch.tensor(0.1)).item())
        kl = gaussian_kl(mu, logvar, torch.randn(256, 1, generator=g), prior).mean()
        optimizer.zero_grad()
        kl.backward()
        optimizer.step()
    with torch.no_grad():
        z = prior.sample(4000, generator=torch.Generator().manual_seed(6))[:, 0]
    assert (z.abs() < 0.25).float().mean().item() < 0.02
    assert (z > 0).float().mean().item() == pytest.approx(0.5, abs=0.05)


def _model(components: int) -> ForwardModel:
    torch.manual_seed(0)
    return ForwardModel(3, 2, latent_dim=4, hidden=16, layers=2, prior_components=components)


def test_the_cvae_draws_its_latents_from_the_mixture_and_trains_it() -> None:
    model = _model(2)
    z = model.sample_prior(5, 6, generator=torch.Generator().manual_seed(7))
    expected = model.prior.sample(5, 6, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(z, expected)
    obs = torch.randn(3, 16, 3, generator=torch.Generator().manual_seed(8)).cumsum(0)
    action = torch.randn(2, 16, 2, generator=torch.Generator().manual_seed(9))
    window = Window(obs, action, torch.zeros(2, 16), torch.zeros(2, 16, dtype=torch.bool))
    for dropout in (0.0, 1.0):  # the KL of kept windows, the energy of dropped ones
        model.zero_grad()
        model.latent_dropout = dropout
        model.loss(window, generator=torch.Generator().manual_seed(0)).loss.backward()
        grads = [p.grad for p in (model.prior.means, model.prior.log_stds)]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), dropout
    # a planner's backward pass through a rollout leaves the prior alone
    model.zero_grad()
    actions = torch.zeros(2, 16, 2, requires_grad=True)
    model.rollout(obs[0], actions, model.sample_prior(2, 16)).sum().backward()
    assert actions.grad is not None and model.prior.means.grad is None


def test_the_mixture_is_in_the_state_dict_and_absent_by_default() -> None:
    model, other = _model(3), _model(3)
    with torch.no_grad():
        model.prior.means.add_(1.0)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other.prior.means, model.prior.means)
    assert {"prior.means", "prior.log_stds", "prior.logits"} <= set(model.state_dict())
    default = _model(0)
    assert default.prior is None and not any(k.startswith("prior.") for k in default.state_dict())
    no_latent = ForwardModel(3, 2, latent_dim=0, hidden=16, layers=2, prior_components=3)
    assert no_latent.prior is None


def test_a_negative_component_count_is_refused() -> None:
    with pytest.raises(ValueError, match="prior_components"):
        ForwardModel(3, 2, latent_dim=4, prior_components=-1)


def test_a_nan_prior_samples_nan_latents_rather_than_raising() -> None:
    prior = MixturePrior(3, 2)
    with torch.no_grad():
        for p in prior.parameters():
            p.fill_(float("nan"))
    assert prior.sample(4, generator=torch.Generator().manual_seed(0)).isnan().all()
