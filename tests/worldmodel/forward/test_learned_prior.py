"""The CVAE with a learned conditional prior p(z | s, a): its KL, how a step draws z through it,
and, for both priors, that on a deterministic future the samples scatter less than they err."""

import pytest
import torch

from worldmodel.data.store import Stats, Window
from worldmodel.forward.model import ForwardModel


def _model(**kw: object) -> ForwardModel:
    torch.manual_seed(0)
    model = ForwardModel(
        3, 2, latent_dim=4, hidden=16, layers=2, dropout=0.0, prior="learned", **kw
    )
    model.set_normalization(
        Stats(torch.tensor([0.1, -0.2, 0.3]), torch.tensor([1.0, 2.0, 0.5]),
              torch.tensor([0.0, 0.1, -0.1]), torch.tensor([0.5, 1.5, 1.0]))
    )  # fmt: skip
    with torch.no_grad():  # a prior away from N(0, I), so using it is visible
        model.prior_net[-1].bias.copy_(torch.linspace(-1.5, 1.5, 8))
    return model


def _window(h: int, n: int, seed: int) -> Window:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(h + 1, n, 3, generator=g).cumsum(0)
    action = torch.rand(h, n, 2, generator=g) * 2 - 1
    return Window(obs, action, torch.zeros(h, n), torch.zeros(h, n, dtype=torch.bool))


def test_the_kl_is_the_gaussian_kl_from_the_posterior_to_the_prior_at_s_a() -> None:
    model = _model()
    window = _window(1, 32, seed=1)
    with torch.no_grad():
        model.encoder[-1].bias.copy_(torch.linspace(-2.0, 2.0, 8))
        mu, logvar = model._posterior(window.obs[0], window.action[0], window.obs[1])
        mu_p, logvar_p = model._prior(window.obs[0], window.action[0])
        _, kl, _ = model._posterior_terms(window.obs, window.action, torch.Generator())
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(mu_p, (0.5 * logvar_p).exp())
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(-1) / 3)
    assert not torch.allclose(mu_p[0], mu_p[1])  # the prior depends on (s, a)


def test_a_step_draws_z_as_the_prior_mean_plus_its_scale_times_the_noise() -> None:
    model = _model().eval()
    s, a = torch.randn(5, 3), torch.rand(5, 2)
    noise = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        mu_p, logvar_p = model._prior(s, a)
        expected = model._predict(s, a, mu_p + noise * (0.5 * logvar_p).exp())
        torch.testing.assert_close(model.step(s, a, noise), expected)
        assert not torch.allclose(model.step(s, a, noise), model._predict(s, a, noise))


def test_rollout_equals_repeated_step_with_the_same_noise() -> None:
    model = _model().eval()
    s0, actions = torch.randn(6, 3), torch.rand(4, 6, 2)
    noise = torch.randn(4, 6, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        states, s = [], s0
        for t in range(4):
            s = model.step(s, actions[t], noise[t])
            states.append(s)
        torch.testing.assert_close(model.rollout(s0, actions, noise), torch.stack(states))


def test_dropped_windows_roll_out_through_the_prior_and_train_it() -> None:
    model = _model(latent_dropout=1.0)
    terms = model.loss(_window(2, 8, seed=4), generator=torch.Generator().manual_seed(5))
    terms.loss.backward()
    assert terms.kl.item() == 0.0
    assert model.prior_net[0].weight.grad.abs().sum() > 0


def _train(model: ForwardModel, batch, steps: int) -> ForwardModel:
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model.loss(batch(256, g), generator=g).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _deterministic(n: int, g: torch.Generator) -> Window:
    """s' = f(s, a), a nonlinear map the decoder only approximates, so the posterior can carry
    its residual."""
    s = 2 * torch.rand(n, 2, generator=g) - 1
    a = 2 * torch.rand(n, 1, generator=g) - 1
    velocity = s[:, 1] + 0.3 * torch.sin(3 * s[:, 0]) + 0.2 * a[:, 0]
    s_next = torch.stack([s[:, 0] + 0.1 * s[:, 1], velocity], -1)
    return Window(
        torch.stack([s, s_next]), a[None], torch.zeros(1, n), torch.zeros(1, n, dtype=torch.bool)
    )


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["standard", "learned"])
def test_on_a_deterministic_future_the_prior_samples_scatter_less_than_they_err(prior: str) -> None:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=2, hidden=32, layers=2, dropout=0.0, prior=prior)
    model.set_normalization(
        Stats(torch.zeros(2), torch.ones(2) * 0.6, torch.zeros(2), torch.tensor([0.06, 0.3]))
    )
    _train(model, _deterministic, 1000)
    test = _deterministic(512, torch.Generator().manual_seed(9))
    with torch.no_grad():
        samples = torch.stack([
            model.step(test.obs[0], test.action[0], generator=torch.Generator().manual_seed(i))
            for i in range(8)
        ])  # fmt: skip
    error = ((samples.mean(0) - test.obs[1]) / model.delta_std).square().mean().item()
    spread = (samples / model.delta_std).var(0).mean().item()
    assert spread < error, (spread, error)  # z carries little of the decoder's own residual
