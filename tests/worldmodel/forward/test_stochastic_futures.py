"""The CVAE's prior samples reproduce the modes of a bimodal future, not their mean."""

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
    return Window(torch.stack([s, s_next]), a[None], torch.zeros(1, n), torch.zeros(1, n, dtype=torch.bool))


def _trained(latent_dim: int, steps: int = 600) -> ForwardModel:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = ForwardModel(1, 1, latent_dim=latent_dim, hidden=64, layers=2, dropout=0.0)
    model.set_normalization(
        Stats(torch.zeros(1), torch.ones(1) * 0.6, torch.zeros(1), torch.ones(1) * JUMP)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model.loss(_bimodal_batch(256, g), generator=g).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.slow
def test_prior_samples_put_their_mass_on_both_modes_and_not_between() -> None:
    model = _trained(latent_dim=2)
    s, a = torch.tensor([[0.2]]).expand(400, 1), torch.tensor([[0.5]]).expand(400, 1)
    with torch.no_grad():
        samples = model.step(s, a, generator=torch.Generator().manual_seed(1))[:, 0]
    centre = 0.2 + 0.2 * 0.5
    upper = ((samples - (centre + JUMP)).abs() < 0.25 * JUMP).float().mean().item()
    lower = ((samples - (centre - JUMP)).abs() < 0.25 * JUMP).float().mean().item()
    between = ((samples - centre).abs() < 0.25 * JUMP).float().mean().item()
    assert upper > 0.3 and lower > 0.3, (upper, lower)
    assert upper + lower > 0.8 and between < 0.1, (upper, lower, between)
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
