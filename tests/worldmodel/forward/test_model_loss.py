"""ForwardModel's training loss: the unrolled multi-step error, the CVAE's posterior, ELBO and
energy terms, latent dropout, and short fits on a linear system."""

import math

import numpy as np
import pytest
import torch
from model_cases import A, S, _cvae, _stats, window

from worldmodel.data.store import EpisodeStore, Stats, Window
from worldmodel.forward.fit import FitSchedule, ModelTrainer
from worldmodel.forward.model import ForwardModel, _norm


def linear_system_store(episodes: int, length: int, seed: int) -> EpisodeStore:
    """Noisy-free damped linear dynamics: a model must learn it far better than s' = s."""
    rng = np.random.default_rng(seed)
    a_mat = np.array([[0.95, 0.2, 0.0], [-0.2, 0.95, 0.0], [0.0, 0.1, 0.9]], np.float32)
    b_mat = rng.normal(size=(S, A)).astype(np.float32) * 0.3
    store = EpisodeStore(S, A)
    for _ in range(episodes):
        obs = np.zeros((length, S), np.float32)
        acts = rng.uniform(-1, 1, (length, A)).astype(np.float32)
        s = rng.normal(size=S).astype(np.float32)
        nxt = np.zeros_like(obs)
        for t in range(length):
            obs[t] = s
            s = a_mat @ s + b_mat @ acts[t]
            nxt[t] = s
        store.add_episode(obs, acts, np.zeros(length), nxt, np.zeros(length), np.zeros(length))
    return store


@pytest.mark.parametrize("latent_dim", [4, 0])
def test_short_training_run_lowers_validation_loss(latent_dim: int) -> None:
    torch.manual_seed(0)
    train, val = linear_system_store(40, 30, seed=0).split(0.2, seed=0)
    model = ForwardModel(S, A, latent_dim=latent_dim, hidden=64, layers=2)
    model.set_normalization(train.stats())
    trainer = ModelTrainer(model, lr=3e-3, seed=0)
    val_set = val.windows(val.window_starts(5), 5)
    before = trainer.validate(val_set)["loss"]
    schedule = FitSchedule(horizon=5, batch_size=64, max_steps=300, eval_every=50, patience=10)
    result = trainer.fit(train, val, schedule)
    after = trainer.validate(val_set)["loss"]
    assert after < 0.2 * before, (before, after)
    assert result.best_val_loss == pytest.approx(after, rel=1e-5)


def test_non_finite_loss_skips_the_update() -> None:
    torch.manual_seed(0)
    model = ForwardModel(S, A, hidden=32)
    trainer = ModelTrainer(model, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = window()
    bad = Window(bad.obs.clone().fill_(float("nan")), bad.action, bad.reward, bad.terminated)
    metrics = trainer.update(bad)
    assert metrics["skipped_updates"] == 1 and trainer.total_steps == 0
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_multi_step_loss_unrolls_on_the_models_own_predictions() -> None:
    """The loss at horizon 3 is the mean of the errors of s1 = G(s0), s2 = G(s1), s3 = G(s2):
    teacher forcing (G(real s1)) or a loss on the last step alone give other values."""
    torch.manual_seed(0)
    model = ForwardModel(3, 2, latent_dim=0, hidden=16, layers=1, dropout=0.0)
    g = torch.Generator().manual_seed(3)
    obs, action = torch.randn(4, 8, 3, generator=g), torch.randn(3, 8, 2, generator=g)
    window = Window(obs, action, torch.zeros(3, 8), torch.zeros(3, 8, dtype=torch.bool))
    no_z = torch.zeros(8, 0)
    with torch.no_grad():
        s, errors = obs[0], []
        for t in range(3):
            s = model._predict(s, action[t], no_z)
            errors.append(((s - obs[t + 1]) / model.delta_std).square().mean())
        expected = torch.stack(errors).mean()
        terms = model.loss(window)
    torch.testing.assert_close(terms.reconstruction, expected)
    assert not torch.isclose(terms.reconstruction, errors[-1])


def test_the_posterior_reads_normalised_state_action_and_delta_and_bounds_its_variance() -> None:
    model = _cvae(latent_dropout=0.0)
    g = torch.Generator().manual_seed(5)
    stats = Stats(*(torch.rand(3, generator=g) + 0.5 for _ in range(4)))
    model.set_normalization(stats)
    s, a = torch.randn(6, 3, generator=g), torch.randn(6, 2, generator=g)
    s_next = s + torch.randn(6, 3, generator=g)
    with torch.no_grad():
        mu, logvar = model._posterior(s, a, s_next)
        inputs = torch.cat(
            [(s - stats.state_mean) / stats.state_std, a,
             (s_next - s - stats.delta_mean) / stats.delta_std], -1,
        )  # fmt: skip
        out = model.encoder(inputs)
        torch.testing.assert_close(mu, out[:, :4])
        torch.testing.assert_close(logvar, out[:, 4:].clamp(-8, 8))
        model.encoder[-1].bias.copy_(torch.tensor([0.0] * 4 + [50.0, -50.0, 50.0, -50.0]))
        _, clamped = model._posterior(s, a, s_next)
    assert clamped[:, 0].min() == 8.0 and clamped[:, 1].max() == -8.0


def test_the_posterior_of_each_step_sees_the_real_next_state_after_the_predicted_one() -> None:
    """q(z | s[t], a[t], s'[t+1]) is fed the model's own s[t] (the unroll) and the real next
    state obs[t+1]: its delta input is the normalised obs[t+1] - s[t]."""
    model = _cvae(latent_dropout=0.0)
    g = torch.Generator().manual_seed(8)
    model.set_normalization(Stats(*(torch.rand(3, generator=g) + 0.5 for _ in range(4))))
    horizon = 3
    obs, action = (
        torch.randn(horizon + 1, 6, 3, generator=g),
        torch.randn(horizon, 6, 2, generator=g),
    )
    window = Window(obs, action, torch.zeros(horizon, 6), torch.zeros(horizon, 6, dtype=torch.bool))
    inputs: list[torch.Tensor] = []
    hook = model.encoder.register_forward_hook(lambda m, args, out: inputs.append(args[0]))
    with torch.no_grad():
        model.loss(window, generator=g)
    hook.remove()
    assert len(inputs) == horizon
    torch.testing.assert_close(inputs[0][:, :3], (obs[0] - model.state_mean) / model.state_std)
    for t, x in enumerate(inputs):
        s_t = x[:, :3] * model.state_std + model.state_mean
        torch.testing.assert_close(x[:, 3:5], action[t])
        expected = (obs[t + 1] - s_t - model.delta_mean) / model.delta_std
        torch.testing.assert_close(x[:, 5:], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["prior", "zero"])
def test_latent_dropout_one_charges_no_kl_and_zero_charges_every_window(mode: str) -> None:
    torch.manual_seed(0)
    always = ForwardModel(S, A, hidden=32, latent_dropout=1.0, latent_dropout_mode=mode)
    terms = always.loss(window())
    assert terms.kl.item() == 0.0 and terms.energy.item() > 0.0
    never = ForwardModel(S, A, hidden=32, latent_dropout=0.0, latent_dropout_mode=mode)
    terms = never.loss(window())
    assert terms.kl.item() > 0.0 and terms.energy.item() == 0.0


def test_zero_mode_scores_dropped_windows_on_the_z_zero_prediction() -> None:
    """With z = 0 both rollouts coincide: the energy score is the error norm of that one."""
    torch.manual_seed(0)
    model = ForwardModel(
        S, A, hidden=32, dropout=0.0, latent_dropout=1.0, latent_dropout_mode="zero"
    )
    w = window()
    terms = model.loss(w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = torch.zeros(w.action.shape[0], w.action.shape[1], model.latent_dim)
        states = model.rollout(w.obs[0], w.action, z)
    errors = ((states - w.obs[1:]) / model.delta_std).norm(dim=-1)  # [H, B]
    expected = errors.mean(0) / S**0.5
    torch.testing.assert_close(terms.energy.detach(), expected.mean(), rtol=1e-4, atol=1e-6)


def _kl_to_prior(
    model: ForwardModel, q: torch.distributions.Normal, z: torch.Tensor
) -> torch.Tensor:
    """KL(q || p) [B]: closed form to N(0, I); to a mixture, log q(z) - log p(z) at q's sample."""
    if model.prior is None:
        return torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=model.prior.logits),
        torch.distributions.Independent(
            torch.distributions.Normal(model.prior.means, model.prior.log_stds.exp()), 1
        ),
    )
    return q.log_prob(z).sum(-1) - mixture.log_prob(z)


def _expected_terms(
    model: ForwardModel, w: Window, kept: torch.Tensor, dropped: torch.Tensor,
    g: torch.Generator, dim_weight: torch.Tensor | float = 1.0, samples: int = 2,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """The CVAE's per-window ELBO terms and energy by hand, with torch.distributions, drawing
    from g in the model's order: the posterior's noise step by step, then the prior's z. The
    posterior reads the real transition (obs[t], obs[t+1]); the decoder unrolls its own s.
    Each state dim's NLL is multiplied by its `dim_weight`; the energy score is that of
    `samples` prior rollouts, its spread term over every pair of them."""
    horizon, half_log_2pi = w.action.shape[0], 0.5 * math.log(2 * math.pi)
    obs, act = w.obs[:, kept], w.action[:, kept]
    s, nll, kl, squared = obs[0], 0.0, 0.0, 0.0
    scale = torch.distributions.Normal(0.0, model.log_std.clamp(min=-7.0).exp())
    for t in range(horizon):
        mu, logvar = model._posterior(obs[t], act[t], obs[t + 1])
        noise = torch.randn(mu.shape, generator=g)
        q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
        kl = kl + _kl_to_prior(model, q, mu + noise * (0.5 * logvar).exp())
        s = model.step(s, act[t], mu + noise * (0.5 * logvar).exp())
        error = (s - obs[t + 1]) / model.delta_std
        nll = nll - (dim_weight * (scale.log_prob(error) + half_log_2pi)).sum(-1)
        squared = squared + error.square().mean(-1)
    obs, act = w.obs[:, dropped], w.action[:, dropped]
    z = model.sample_prior(horizon, samples, obs.shape[1], generator=g)
    states, energy = obs[0].expand(samples, -1, -1), 0.0
    for t in range(horizon):
        states = model.step(states, act[t].expand(samples, -1, -1), z[t])
        errors = ((states - obs[t + 1]) / model.delta_std).norm(dim=-1).mean(0)
        pairs = [(i, j) for i in range(samples) for j in range(samples) if i != j]
        spread = sum(((states[i] - states[j]) / model.delta_std).norm(dim=-1) for i, j in pairs)
        energy = energy + errors - 0.5 * spread / len(pairs)
    n = horizon * 3
    return nll / n, kl / n, squared / horizon, energy / (horizon * 3**0.5)


def _loss_case(
    elbo_weight: str = "none", samples: int = 2, components: int = 0
) -> tuple[ForwardModel, Window]:
    torch.manual_seed(0)
    model = ForwardModel(3, 2, latent_dim=4, hidden=16, layers=2, dropout=0.0,
                         latent_dropout=0.5, beta=0.7, elbo_weight=elbo_weight,
                         energy_samples=samples, prior_components=components)  # fmt: skip
    model.set_normalization(_stats(11))
    with torch.no_grad():
        model.log_std.copy_(torch.tensor([-9.0, 0.3, -0.5]))  # -9 is held at the floor, -7
        model.encoder[-1].bias.copy_(torch.linspace(-1.5, 1.5, 8))
    g = torch.Generator().manual_seed(11)
    obs = torch.randn(3, 10, 3, generator=g).cumsum(0)
    return model, Window(obs, torch.randn(2, 10, 2, generator=g), torch.zeros(2, 10),
                         torch.zeros(2, 10, dtype=torch.bool))  # fmt: skip


VARIANCES = torch.tensor([math.exp(-14), math.exp(0.6), math.exp(-1)])  # _loss_case's, floored


@pytest.mark.parametrize(
    ("elbo_weight", "weight", "dim_weight", "samples", "components"),
    [
        ("none", 1.0, 1.0, 2, 0),
        ("variance", VARIANCES.mean().item(), 1.0, 2, 0),
        ("per_dim", VARIANCES.mean().item(), VARIANCES / VARIANCES.mean(), 2, 0),
        ("none", 1.0, 1.0, 5, 0),
        ("none", 1.0, 1.0, 2, 3),
    ],
)
def test_the_training_loss_is_the_elbo_of_kept_and_the_energy_of_dropped_windows(
    elbo_weight: str, weight: float, dim_weight: torch.Tensor | float, samples: int,
    components: int,
) -> None:  # fmt: skip
    """Each window is dropped when its uniform draw is below `latent_dropout`; the loss is
    (w * sum of NLL + beta KL over kept windows + sum of energies over dropped ones) / B, over
    a 2-step unroll, where w is 1 or the mean v of the decoder's variances, and each dim's NLL is
    weighted by 1 or (with 'per_dim') by its variance / v; the logged terms are their means over
    their own windows."""
    model, w = _loss_case(elbo_weight, samples, components)
    with torch.no_grad():
        terms = model.loss(w, generator=torch.Generator().manual_seed(12))
        g = torch.Generator().manual_seed(12)
        dropped = torch.rand(10, generator=g) < 0.5
        assert 0 < dropped.sum() < 10
        nll, kl, squared, energy = _expected_terms(
            model, w, ~dropped, dropped, g, dim_weight, samples
        )
    expected = (weight * (nll + 0.7 * kl).sum() + energy.sum()) / 10
    torch.testing.assert_close(terms.loss, expected)
    torch.testing.assert_close(terms.kl, kl.mean())
    torch.testing.assert_close(terms.reconstruction, squared.mean())
    torch.testing.assert_close(terms.energy, energy.mean())


@pytest.mark.parametrize("batch", [10, 1])
def test_the_validation_loss_scores_every_window_both_ways_without_a_dropout_draw(
    batch: int,
) -> None:
    """With `score_all` the loss is mean(NLL + beta KL) + mean(energy) over all windows (a
    single window's terms are its own, not divided further)."""
    model, w = _loss_case()
    w = Window(w.obs[:, :batch], w.action[:, :batch], w.reward[:, :batch], w.terminated[:, :batch])
    everyone = torch.ones(batch, dtype=torch.bool)
    with torch.no_grad():
        terms = model.loss(w, generator=torch.Generator().manual_seed(13), score_all=True)
        g = torch.Generator().manual_seed(13)
        nll, kl, squared, energy = _expected_terms(model, w, everyone, everyone, g)
    torch.testing.assert_close(terms.loss, (nll + 0.7 * kl).mean() + energy.mean())
    torch.testing.assert_close(terms.kl, kl.mean())
    torch.testing.assert_close(terms.reconstruction, squared.mean())
    torch.testing.assert_close(terms.energy, energy.mean())


def test_latent_dropout_drops_its_share_of_windows() -> None:
    """Over 4,000 windows at latent_dropout 0.3 the encoder sees 70 % of them (+-2 %)."""
    torch.manual_seed(0)
    model = ForwardModel(3, 2, latent_dim=2, hidden=8, layers=1, dropout=0.0, latent_dropout=0.3)
    g = torch.Generator().manual_seed(0)
    w = Window(torch.randn(2, 4000, 3, generator=g), torch.randn(1, 4000, 2, generator=g),
               torch.zeros(1, 4000), torch.zeros(1, 4000, dtype=torch.bool))  # fmt: skip
    rows: list[int] = []
    hook = model.encoder.register_forward_hook(lambda m, args, out: rows.append(len(args[0])))
    with torch.no_grad():
        model.loss(w, generator=torch.Generator().manual_seed(1))
    hook.remove()
    assert rows[0] / 4000 == pytest.approx(0.7, abs=0.02)


def test_the_deterministic_loss_is_its_reconstruction_and_charges_nothing_else() -> None:
    torch.manual_seed(0)
    model = ForwardModel(3, 2, latent_dim=0, hidden=16, layers=1)
    terms = model.loss(window(horizon=2, batch=4))
    assert terms.loss is terms.reconstruction and terms.reconstruction.item() > 0
    assert terms.kl.item() == 0.0 and terms.energy.item() == 0.0


def test_the_energy_norm_is_smooth_at_zero() -> None:
    """_norm(0) = sqrt(1e-12) = 1e-6 with gradient 0 (not NaN); elsewhere the plain norm."""
    x = torch.zeros(2, 3, requires_grad=True)
    value = _norm(x)
    value.sum().backward()
    assert value.tolist() == pytest.approx([1e-6, 1e-6], rel=1e-6)
    assert x.grad.abs().max().item() == 0.0
    assert _norm(torch.tensor([3.0, 4.0])).item() == pytest.approx(5.0, rel=1e-9)


@pytest.mark.parametrize("elbo_weight", ["variance", "per_dim"])
def test_validation_scores_the_plain_elbo_whatever_the_weight(elbo_weight: str) -> None:
    """The weights shape the training steps only: early stopping compares the same quantity."""
    losses = []
    for weight in ("none", elbo_weight):
        model, w = _loss_case(weight)
        with torch.no_grad():
            losses.append(model.loss(w, torch.Generator().manual_seed(3), score_all=True).loss)
    torch.testing.assert_close(losses[1], losses[0])


def test_the_variance_weight_is_not_differentiated() -> None:
    """With 'variance' the scale's gradient is the plain ELBO's times the weight: the weight
    rescales the ELBO's steps and does not itself pull the scale down."""
    grads = {}
    for elbo_weight in ("none", "variance"):
        model, w = _loss_case(elbo_weight)
        model.latent_dropout = 0.0
        model.loss(w, generator=torch.Generator().manual_seed(5)).loss.backward()
        grads[elbo_weight] = model.log_std.grad
    torch.testing.assert_close(grads["variance"], VARIANCES.mean() * grads["none"])
    assert grads["none"][1:].abs().min() > 0


def test_an_unknown_elbo_weight_is_refused_with_the_choices() -> None:
    choices = r"\('none', 'variance', 'per_dim'\)"
    with pytest.raises(ValueError, match=rf"^elbo_weight must be one of {choices}$"):
        ForwardModel(S, A, hidden=8, elbo_weight="sigma")
