"""The CVAE's prior samples reproduce the modes of a bimodal future, not their mean."""

from collections.abc import Callable

import pytest
import torch

from worldmodel.data.store import Stats, Window
from worldmodel.forward.model import ForwardModel

JUMP = 0.5  # s' = s + 0.2 a +- JUMP, a fair coin


def _bimodal_batch(n: int, g: torch.Generator) -> Window:
    s = 2 * torch.rand(n, 1, generator=g) - 1
    a = 2 * torch.rand(n, 1, generator=g) - 1
    coin = 2 * torch.randint(0, 2, (n, 1), generator=g).float() - 1
    s_next = s + 0.2 * a + JUMP * coin
    return Window(
        torch.stack([s, s_next]), a[None], torch.zeros(1, n), torch.zeros(1, n, dtype=torch.bool)
    )


def _train(
    model: ForwardModel, batch: Callable[[int, torch.Generator], Window], steps: int
) -> ForwardModel:
    """`steps` Adam steps on fresh batches of 256 from `batch`, seeded; the model in eval mode."""
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model.loss(batch(256, g), generator=g).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _trained(latent_dim: int, steps: int = 600, prior_components: int = 0) -> ForwardModel:
    torch.manual_seed(0)
    model = ForwardModel(
        1, 1, latent_dim=latent_dim, hidden=64, layers=2, dropout=0.0,
        prior_components=prior_components,
    )  # fmt: skip
    model.set_normalization(
        Stats(torch.zeros(1), torch.ones(1) * 0.6, torch.zeros(1), torch.ones(1) * JUMP)
    )
    return _train(model, _bimodal_batch, steps)


@pytest.mark.slow
@pytest.mark.parametrize("prior_components", [0, 4])
def test_prior_samples_put_their_mass_on_both_modes_and_not_between(prior_components: int) -> None:
    model = _trained(latent_dim=2, prior_components=prior_components)
    s, a = torch.tensor([[0.2]]).expand(400, 1), torch.tensor([[0.5]]).expand(400, 1)
    with torch.no_grad():
        samples = model.step(s, a, generator=torch.Generator().manual_seed(1))[:, 0]
    centre = 0.2 + 0.2 * 0.5
    upper = ((samples - (centre + JUMP)).abs() < 0.25 * JUMP).float().mean().item()
    lower = ((samples - (centre - JUMP)).abs() < 0.25 * JUMP).float().mean().item()
    between = ((samples - centre).abs() < 0.25 * JUMP).float().mean().item()
    assert upper > 0.3 and lower > 0.3, (upper, lower)
    assert upper + lower > 0.8 and between < 0.1, (upper, lower, between)
    if prior_components:  # the mixture's mass stays off the band where the decoder crosses over
        assert between < 0.01, between
    # the deterministic model can only answer the mean
    det = _trained(latent_dim=0)
    with torch.no_grad():
        mean = det.step(s[:1], a[:1])[0, 0].item()
    assert mean == pytest.approx(centre, abs=0.1)


def test_dropped_windows_are_scored_by_the_prior_energy_and_charge_no_kl() -> None:
    torch.manual_seed(0)
    model = ForwardModel(1, 1, latent_dim=2, hidden=16, layers=2, dropout=0.0, latent_dropout=1.0)
    window = _bimodal_batch(64, torch.Generator().manual_seed(0))
    terms = model.loss(window, generator=torch.Generator().manual_seed(0))
    assert terms.kl.item() == 0.0 and terms.reconstruction.item() == 0.0
    torch.testing.assert_close(terms.loss, terms.energy)
    terms.loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.encoder.parameters())
    model.latent_dropout = 0.0
    kept = model.loss(window, generator=torch.Generator().manual_seed(0))
    assert kept.energy.item() == 0.0 and kept.kl.item() > 0.0


def test_validation_scores_every_window_with_both_latents() -> None:
    torch.manual_seed(0)
    model = ForwardModel(1, 1, latent_dim=2, hidden=16, layers=2, dropout=0.0, latent_dropout=0.5)
    window = _bimodal_batch(64, torch.Generator().manual_seed(0))
    both = model.loss(window, generator=torch.Generator().manual_seed(0), score_all=True)
    assert both.energy.item() > 0.0 and both.kl.item() > 0.0
    model.latent_dropout = 1.0
    prior = model.loss(window, generator=torch.Generator().manual_seed(0))
    assert both.loss.item() > prior.loss.item()  # ELBO term added on top of the energy


def _window(h: int, n: int, seed: int, dims: int = 3) -> Window:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(h + 1, n, dims, generator=g).cumsum(0)
    action = torch.randn(h, n, 2, generator=g)
    return Window(obs, action, torch.zeros(h, n), torch.zeros(h, n, dtype=torch.bool))


def _cvae(**kw: float) -> ForwardModel:
    torch.manual_seed(0)
    model = ForwardModel(3, 2, latent_dim=4, hidden=16, layers=2, dropout=0.0, **kw)
    model.set_normalization(
        Stats(torch.tensor([0.1, -0.2, 0.3]), torch.tensor([1.0, 2.0, 0.5]),
              torch.tensor([0.0, 0.1, -0.1]), torch.tensor([0.5, 1.5, 1.0]))
    )  # fmt: skip
    return model


def test_the_kl_is_the_gaussian_kl_to_the_standard_prior_per_state_dim() -> None:
    model = _cvae(prior_components=0)
    window = _window(1, 32, seed=1)
    with torch.no_grad():
        model.encoder[-1].bias.copy_(torch.linspace(-2.0, 2.0, 8))  # mu != 0, logvar != 0
        mu, logvar = model._posterior(window.obs[0], window.action[0], window.obs[1])
        _, kl, _ = model._posterior_terms(window.obs, window.action, torch.Generator())
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(-1) / 3)


def test_the_elbo_likelihood_is_gaussian_under_the_learned_scale() -> None:
    model = _cvae()
    window = _window(1, 16, seed=2)
    with torch.no_grad():
        model.log_std.copy_(torch.tensor([-1.0, 0.0, 0.5]))
        nll, _, squared = model._posterior_terms(
            window.obs, window.action, torch.Generator().manual_seed(0)
        )
        mu, logvar = model._posterior(window.obs[0], window.action[0], window.obs[1])
        noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))
        predicted = model.step(window.obs[0], window.action[0], mu + noise * (0.5 * logvar).exp())
    error = (predicted - window.obs[1]) / model.delta_std
    normal = torch.distributions.Normal(torch.zeros(3), model.log_std.exp())
    expected = -(normal.log_prob(error) + 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1) / 3
    torch.testing.assert_close(nll, expected.detach())
    torch.testing.assert_close(squared, error.square().mean(-1))


def test_dropped_windows_are_scored_on_two_rollouts_with_z_from_the_prior() -> None:
    model = _cvae(latent_dropout=1.0)
    window = _window(2, 8, seed=3)
    terms = model.loss(window, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    torch.rand(8, generator=g)  # the dropout draw comes first
    z = model.sample_prior(2, 2, 8, generator=g)  # [H, 2 rollouts, B, Z]
    energy = torch.zeros(8)
    with torch.no_grad():
        states = model.rollout(
            window.obs[0].repeat(2, 1), window.action.repeat(1, 2, 1), z.flatten(1, 2)
        )
    states = states.view(2, 2, 8, 3)
    for t in range(2):
        errors = ((states[t] - window.obs[t + 1]) / model.delta_std).norm(dim=-1)
        spread = ((states[t, 0] - states[t, 1]) / model.delta_std).norm(dim=-1)
        energy += errors.mean(0) - 0.5 * spread
    torch.testing.assert_close(
        terms.energy.detach(), (energy / (2 * 3**0.5)).mean(), rtol=1e-4, atol=1e-6
    )


def test_half_latent_dropout_mixes_both_scores_in_proportion() -> None:
    window = _window(2, 4000, seed=4)
    loss = {}
    for p in (0.0, 0.5, 1.0):
        loss[p] = _cvae(latent_dropout=p).loss(window, torch.Generator().manual_seed(0)).loss.item()
    assert loss[0.0] != pytest.approx(loss[1.0], rel=0.2)  # the two scores differ
    assert loss[0.5] == pytest.approx(0.5 * (loss[0.0] + loss[1.0]), rel=0.05)


def test_the_encoder_sees_the_real_transitions_not_the_unrolled_prediction() -> None:
    # The KL depends on the posterior only; were it fed the rollout's own predictions, changing
    # the decoder would change the later steps' posteriors and so the KL.
    model = _cvae()
    window = _window(3, 16, seed=6)
    with torch.no_grad():
        _, before, _ = model._posterior_terms(window.obs, window.action, torch.Generator())
        model.decoder[-1].bias.add_(1.0)
        _, after, squared = model._posterior_terms(window.obs, window.action, torch.Generator())
    torch.testing.assert_close(after, before)
    assert squared.min() > 0.1  # the decoder change did move the predictions


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
def test_on_a_deterministic_future_the_prior_samples_scatter_less_than_they_err() -> None:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=2, hidden=32, layers=2, dropout=0.0)
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
