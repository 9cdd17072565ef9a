import math

import pytest
import torch

from worldmodel.data.store import Stats, Window
from worldmodel.forward.ensemble import EnsembleModel


def _model(members: int = 3) -> EnsembleModel:
    torch.manual_seed(0)
    model = EnsembleModel(2, 1, members=members, hidden=8, layers=2)
    model.set_normalization(
        Stats(
            torch.tensor([0.5, -1.0]),
            torch.tensor([2.0, 0.5]),
            torch.tensor([0.1, 0.0]),
            torch.tensor([0.3, 3.0]),
        )
    )
    return model


def _member_mean(model: EnsembleModel, m: int, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    h = torch.cat([(s - model.state_mean) / model.state_std, a], -1)
    for i, (w, b) in enumerate(zip(model.weights, model.biases, strict=True)):
        h = h @ w[m] + b[m, 0]
        if i < len(model.weights) - 1:
            h = torch.nn.functional.silu(h)
    return h[:, :2]


def test_z_picks_the_member_and_its_gaussian_noise() -> None:
    model = _model()
    s, a = torch.randn(4, 2), torch.randn(4, 1)
    for m in range(3):
        u = torch.full((4, 1), [-1.0, 0.0, 1.0][m])  # Phi(-1) < 1/3 < Phi(0) < 2/3 < Phi(1)
        eps = torch.randn(4, 2)
        mean, logvar = model.gaussians(s, a)
        expected_n = _member_mean(model, m, s, a) + (0.5 * logvar[m]).exp() * eps
        expected = s + expected_n * model.delta_std + model.delta_mean
        torch.testing.assert_close(model.step(s, a, torch.cat([u, eps], -1)), expected)
        torch.testing.assert_close(mean[m], _member_mean(model, m, s, a))


def test_prior_draws_every_member_about_equally_and_standard_noise() -> None:
    z = _model().sample_prior(30000, generator=torch.Generator().manual_seed(0))
    members = _model().member(z)
    counts = torch.bincount(members, minlength=3).float() / len(z)
    torch.testing.assert_close(counts, torch.full((3,), 1 / 3), atol=0.01, rtol=0)
    assert abs(z[:, 1:].std().item() - 1.0) < 0.02


def test_log_variance_stays_within_its_soft_bounds() -> None:
    model = _model()
    with torch.no_grad():
        model.biases[-1][:, :, 2:] = 50.0  # a member claiming a huge variance
    _, logvar = model.gaussians(torch.randn(5, 2), torch.randn(5, 1))
    assert (logvar <= model.max_logvar + 1e-3).all() and (logvar >= model.min_logvar - 1e-3).all()
    assert logvar.max() > 0.4  # it does reach the top bound


def test_validation_loss_is_the_mean_gaussian_nll_per_dim() -> None:
    model = _model()
    g = torch.Generator().manual_seed(0)
    obs, action = torch.randn(3, 4, 2, generator=g), torch.randn(2, 4, 1, generator=g)
    window = Window(obs, action, torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.bool))
    terms = model.loss(window, score_all=True)
    s, target = obs[:-1].flatten(0, 1), (obs[1:] - obs[:-1]).flatten(0, 1)
    mean, logvar = model.gaussians(s, action.flatten(0, 1))
    target_n = (target - model.delta_mean) / model.delta_std
    log_prob = torch.distributions.Normal(mean, (0.5 * logvar).exp()).log_prob(target_n)
    nll = -(log_prob + 0.5 * math.log(2 * math.pi)).mean()
    bounds = 0.01 * (model.max_logvar.sum() - model.min_logvar.sum()) / 2
    torch.testing.assert_close(terms.loss, nll + bounds)
    bootstrapped = model.loss(window, generator=torch.Generator().manual_seed(1))
    assert not torch.isclose(bootstrapped.loss, terms.loss)


def test_uncertainty_is_the_members_disagreement() -> None:
    model = _model()
    s0, actions = torch.randn(4, 2), torch.randn(5, 4, 1)
    assert (model.uncertainty(s0, actions) > 0).all()
    with torch.no_grad():
        for w, b in zip(model.weights, model.biases, strict=True):
            w.copy_(w[:1].expand_as(w))
            b.copy_(b[:1].expand_as(b))
    torch.testing.assert_close(
        model.uncertainty(s0, actions), torch.zeros(5, 4), atol=1e-10, rtol=0
    )


def test_the_prior_mean_picks_the_middle_member() -> None:
    model = _model(members=5)
    assert model.member(torch.zeros(2, 3)).tolist() == [2, 2]


def test_an_ensemble_of_one_is_refused() -> None:
    with pytest.raises(ValueError, match="members >= 2"):
        EnsembleModel(2, 1, members=1, hidden=8, layers=1)


def test_prior_draws_follow_the_generator_and_the_models_dtype() -> None:
    model = _model()
    a = model.sample_prior(4, 2, generator=torch.Generator().manual_seed(7))
    b = model.sample_prior(4, 2, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(7)))
    assert model.double().sample_prior(3).dtype == torch.float64


def test_training_loss_weighs_each_members_transitions_by_its_bootstrap_draw() -> None:
    model = _model(members=2)
    g = torch.Generator().manual_seed(0)
    obs, action = torch.randn(2, 1, 2, generator=g), torch.randn(1, 1, 1, generator=g)
    window = Window(obs, action, torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.bool))
    mean, logvar = model.gaussians(obs[0], action[0])
    target_n = (obs[1] - obs[0] - model.delta_mean) / model.delta_std
    nll = (0.5 * ((target_n - mean).square() * (-logvar).exp() + logvar)).mean(-1)  # [E, N]
    bounds = 0.01 * (model.max_logvar.sum() - model.min_logvar.sum()) / 2
    seen_small = False
    for seed in range(8):
        weights = torch.poisson(torch.ones(2, 1), generator=torch.Generator().manual_seed(seed))
        expected = (weights * nll).sum() / weights.sum().clamp(min=1.0) + bounds
        terms = model.loss(window, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(terms.loss, expected)
        seen_small |= weights.sum().item() == 1.0
    assert seen_small  # a draw of one transition in all is divided by 1
    torch.testing.assert_close(terms.reconstruction, (target_n - mean).square().mean())
    assert terms.kl.item() == 0.0 and terms.energy.item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uncertainty_is_the_variance_of_each_members_noise_free_rollout(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    model = EnsembleModel(2, 2, members=4, hidden=8, layers=2).to(dtype)
    model.set_normalization(
        Stats(
            *(
                torch.tensor(v, dtype=dtype)
                for v in ([0.5, -1.0], [2.0, 0.5], [0.1, 0.0], [0.3, 3.0])
            )
        )
    )
    g = torch.Generator().manual_seed(0)
    s0 = torch.randn(3, 2, generator=g, dtype=dtype)
    actions = torch.randn(5, 3, 2, generator=g, dtype=dtype)
    rollouts = []
    for m in range(4):
        s, states = s0, []
        for t in range(5):
            mean, _ = model.gaussians(s, actions[t])
            s = s + mean[m] * model.delta_std + model.delta_mean
            states.append((s - model.state_mean) / model.state_std)
        rollouts.append(torch.stack(states))
    expected = torch.stack(rollouts).var(dim=0).sum(-1)  # [T, B]
    got = model.uncertainty(s0, actions)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected)


ENSEMBLE_MESSAGE = (
    r"^ensemble sizes \(dims, hidden, layers\) must be positive and members >= 2 "
    r"\(its uncertainty is the members' disagreement\)$"
)


@pytest.mark.parametrize("size", ["state_dim", "action_dim", "hidden", "layers"])
def test_a_size_of_zero_is_refused_with_the_rule(size: str) -> None:
    sizes = {"state_dim": 2, "action_dim": 1, "members": 2, "hidden": 8, "layers": 1}
    with pytest.raises(ValueError, match=ENSEMBLE_MESSAGE):
        EnsembleModel(**(sizes | {size: 0}))


def test_two_members_are_enough_and_the_sizes_are_kept() -> None:
    model = EnsembleModel(3, 2, members=2, hidden=8, layers=1)
    assert (model.state_dim, model.action_dim, model.members, model.latent_dim) == (3, 2, 2, 4)


def test_members_start_like_nn_linear_and_the_log_variance_bounds_at_half_and_minus_ten() -> None:
    """Weights and biases are U(-1/sqrt(in), 1/sqrt(in)) per layer (filling more than half of
    it on each side); the soft bounds on the log-variance start at 0.5 and -10 per state dim."""
    torch.manual_seed(0)
    model = EnsembleModel(3, 2, members=4, hidden=32, layers=2)
    assert [tuple(w.shape) for w in model.weights] == [(4, 5, 32), (4, 32, 32), (4, 32, 6)]
    assert [tuple(b.shape) for b in model.biases] == [(4, 1, 32), (4, 1, 32), (4, 1, 6)]
    for w, b, inp in zip(model.weights, model.biases, (5, 32, 32), strict=True):
        bound = inp**-0.5
        for p in (w, b):
            assert p.abs().max() <= bound
            assert p.max() > 0.5 * bound and p.min() < -0.5 * bound
    assert model.max_logvar.tolist() == [0.5] * 3 and model.min_logvar.tolist() == [-10.0] * 3


def test_the_gaussians_are_each_members_mlp_with_the_log_variance_softly_bounded() -> None:
    """mean, raw = MLP_m([(s - mu) / sd, a]) split in halves; logvar = lo + softplus(hi -
    softplus(hi - raw) - lo), with three state dims (six outputs) and bounds not the init's."""
    torch.manual_seed(0)
    model = EnsembleModel(3, 1, members=3, hidden=8, layers=2)
    g = torch.Generator().manual_seed(1)
    model.set_normalization(Stats(*(torch.rand(3, generator=g) + 0.5 for _ in range(4))))
    with torch.no_grad():
        model.max_logvar.copy_(torch.tensor([0.2, -0.3, 1.0]))
        model.min_logvar.copy_(torch.tensor([-2.0, -1.0, -4.0]))
        model.biases[-1][:, :, 3:] += torch.tensor([3.0, -3.0, 0.0])  # near each bound
        s, a = torch.randn(5, 3, generator=g), torch.randn(5, 1, generator=g)
        mean, logvar = model.gaussians(s, a)
        for m in range(3):
            h = torch.cat([(s - model.state_mean) / model.state_std, a], -1)
            h = torch.nn.functional.silu(h @ model.weights[0][m] + model.biases[0][m])
            h = torch.nn.functional.silu(h @ model.weights[1][m] + model.biases[1][m])
            out = h @ model.weights[2][m] + model.biases[2][m]
            hi, lo = model.max_logvar, model.min_logvar
            upper = hi - torch.nn.functional.softplus(hi - out[:, 3:])
            torch.testing.assert_close(mean[m], out[:, :3])
            torch.testing.assert_close(logvar[m], lo + torch.nn.functional.softplus(upper - lo))


def test_z0_picks_the_member_floor_of_phi_times_e_and_extremes_stay_in_range() -> None:
    """Phi(-2, -0.5, 0.1, 0.9, 3) = 0.023, 0.309, 0.540, 0.816, 0.9987: with E = 4 that is
    members 0, 1, 2, 3, 3; z0 = -inf, +inf and NaN pick 0, 3 and 0 (never out of range)."""
    model = _model(members=4)
    z0 = torch.tensor([-2.0, -0.5, 0.1, 0.9, 3.0, -math.inf, math.inf, math.nan])
    z = torch.stack([z0, torch.zeros(8), torch.zeros(8)], -1)
    assert model.member(z).tolist() == [0, 1, 2, 3, 3, 0, 3, 0]


def test_step_and_rollout_take_several_leading_dims_and_draw_from_the_generator() -> None:
    """s [2, 3, S] steps each row as its own; without z, z is the generator's prior draw."""
    model = _model()
    g = torch.Generator().manual_seed(2)
    s, a, z = (torch.randn(2, 3, n, generator=g) for n in (2, 1, 3))
    with torch.no_grad():
        batched = model.step(s, a, z)
        torch.testing.assert_close(batched[1], model.step(s[1], a[1], z[1]))
        drawn = model.step(s, a, generator=torch.Generator().manual_seed(4))
        z = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(drawn, model.step(s, a, z))
        actions = torch.randn(4, 3, 1, generator=g)
        drawn = model.rollout(s[0], actions, generator=torch.Generator().manual_seed(5))
        z = torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(drawn, model.rollout(s[0], actions, z))


def test_bootstrap_weights_are_poisson_counts_per_member_and_transition() -> None:
    """With 3 members, 6 transitions and 3 state dims, the training loss is sum(w * nll) /
    sum(w) + bounds, w [E, N] the Poisson(1) draw of the generator, nll the mean over dims."""
    torch.manual_seed(0)
    model = EnsembleModel(3, 1, members=3, hidden=8, layers=1)
    g = torch.Generator().manual_seed(0)
    obs, action = torch.randn(3, 3, 3, generator=g), torch.randn(2, 3, 1, generator=g)
    window = Window(obs, action, torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    with torch.no_grad():
        s, target = obs[:-1].flatten(0, 1), (obs[1:] - obs[:-1]).flatten(0, 1)
        mean, logvar = model.gaussians(s, action.flatten(0, 1))
        nll = -torch.distributions.Normal(mean, (0.5 * logvar).exp()).log_prob(target)
        nll = (nll - 0.5 * math.log(2 * math.pi)).mean(-1)  # [E, N]
        weights = torch.poisson(torch.ones(3, 6), generator=torch.Generator().manual_seed(3))
        bounds = 0.01 * (model.max_logvar.sum() - model.min_logvar.sum()) / 3
        terms = model.loss(window, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(terms.loss, (weights * nll).sum() / weights.sum() + bounds)
