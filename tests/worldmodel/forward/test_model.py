import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from worldmodel.data.store import EpisodeStore, Stats, Window
from worldmodel.errors import DataError
from worldmodel.forward.fit import FitSchedule, ModelTrainer
from worldmodel.forward.model import ForwardModel, _norm, mc_dropout, normalized_error

S, A = 3, 2


def window(horizon: int = 5, batch: int = 16, seed: int = 0) -> Window:
    g = torch.Generator().manual_seed(seed)
    return Window(
        obs=torch.randn(horizon + 1, batch, S, generator=g),
        action=torch.rand(horizon, batch, A, generator=g) * 2 - 1,
        reward=torch.zeros(horizon, batch),
        terminated=torch.zeros(horizon, batch, dtype=torch.bool),
    )


def test_shapes_of_step_rollout_and_uncertainty() -> None:
    torch.manual_seed(0)
    model = ForwardModel(S, A, latent_dim=4, hidden=32, layers=2)
    s0, actions = torch.randn(7, S), torch.rand(11, 7, A)
    assert model.step(s0, actions[0]).shape == (7, S)
    assert model.rollout(s0, actions).shape == (11, 7, S)
    assert model.uncertainty(s0, actions, n=4).shape == (11, 7)
    assert model.sample_prior(11, 7).shape == (11, 7, 4)


def test_rollout_equals_repeated_step_with_the_same_latents() -> None:
    torch.manual_seed(0)
    model = ForwardModel(S, A, hidden=32, layers=2).eval()
    s0, actions = torch.randn(5, S), torch.rand(6, 5, A)
    z = model.sample_prior(6, 5)
    s, states = s0, []
    for t in range(6):
        s = model.step(s, actions[t], z[t])
        states.append(s)
    torch.testing.assert_close(model.rollout(s0, actions, z), torch.stack(states))


def test_deterministic_variant_has_no_latent_and_no_kl() -> None:
    torch.manual_seed(0)
    model = ForwardModel(S, A, latent_dim=0, hidden=32)
    assert model.encoder is None and not model.stochastic
    assert model.loss(window()).kl.item() == 0.0
    s0, actions = torch.randn(4, S), torch.rand(3, 4, A)
    torch.testing.assert_close(model.eval().rollout(s0, actions), model.rollout(s0, actions))


def test_mc_dropout_switches_only_dropout_layers_and_restores_them() -> None:
    model = ForwardModel(S, A, hidden=32, dropout=0.2).eval()
    with mc_dropout(model):
        modes = {type(m): m.training for m in model.modules() if type(m) is not nn.Sequential}
        assert modes[nn.Dropout] and not modes[nn.LayerNorm] and not modes[ForwardModel]
    assert not any(m.training for m in model.modules())


def test_uncertainty_is_zero_without_dropout_and_positive_with_it() -> None:
    torch.manual_seed(0)
    s0, actions = torch.randn(4, S), torch.rand(3, 4, A)
    assert ForwardModel(S, A, hidden=32, dropout=0.0).uncertainty(s0, actions).abs().max() == 0
    assert (ForwardModel(S, A, hidden=32, dropout=0.2).uncertainty(s0, actions) > 0).all()


def test_normalization_buffers_travel_in_the_state_dict() -> None:
    model = ForwardModel(S, A, hidden=32)
    stats = Stats(*(torch.full((S,), v) for v in (1.0, 2.0, 3.0, 4.0)))
    model.set_normalization(stats)
    state = model.state_dict()
    assert state["state_std"].tolist() == [2.0] * S and state["delta_std"].tolist() == [4.0] * S


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


def _cvae(latent_dropout: float, mode: str = "prior") -> ForwardModel:
    torch.manual_seed(0)
    return ForwardModel(
        3, 2, latent_dim=4, hidden=16, layers=1, dropout=0.0,
        latent_dropout=latent_dropout, latent_dropout_mode=mode,
    )  # fmt: skip


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


def test_uncertainty_is_the_dropout_variance_in_state_normalised_units_per_step() -> None:
    """One hidden layer, dropout p before the head: the next state's variance over masks is
    sum_j W_ij^2 h_j^2 p / (1 - p) per output i (in delta units), known in closed form."""
    torch.manual_seed(0)
    p = 0.2
    model = ForwardModel(2, 1, latent_dim=0, hidden=8, layers=1, dropout=p).eval()
    stats = Stats(
        torch.zeros(2), torch.tensor([2.0, 0.5]), torch.zeros(2), torch.tensor([1.0, 3.0])
    )
    model.set_normalization(stats)
    s0, actions = torch.tensor([[0.4, -0.2]]), torch.full((3, 1, 1), 0.5)
    torch.manual_seed(1)
    u = model.uncertainty(s0, actions, n=20000)
    with torch.no_grad():
        x = torch.cat([(s0 - stats.state_mean) / stats.state_std, actions[0]], -1)
        h = model.decoder[:3](x)[0]  # Linear, LayerNorm, SiLU: what dropout masks
        head = model.decoder[-1].weight  # [S, H]
        delta_var = (head.square() * h.square()).sum(-1) * p / (1 - p)
        expected = (delta_var * (stats.delta_std / stats.state_std).square()).sum()
    assert u.shape == (3, 1)
    assert u[0, 0].item() == pytest.approx(expected.item(), rel=0.05)
    assert not torch.isclose(u[2, 0], u[0, 0], rtol=0.05)  # each step its own, not broadcast


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


def test_the_fast_rollout_equals_stepping_the_modules_one_by_one() -> None:
    torch.manual_seed(0)
    model = ForwardModel(3, 2, latent_dim=2, hidden=16, layers=2, dropout=0.1).eval()
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for m in model.decoder:
            if isinstance(m, nn.LayerNorm):  # not the init's ones and zeros
                m.weight.copy_(torch.rand(16, generator=g) + 0.5)
                m.bias.copy_(torch.randn(16, generator=g))
    model.set_normalization(Stats(*(torch.rand(3, generator=g) + 0.5 for _ in range(4))))
    s0, actions = torch.randn(4, 3, generator=g), torch.rand(5, 4, 2, generator=g) * 2 - 1
    z = torch.randn(5, 4, 2, generator=g)
    with torch.no_grad():
        fast = model.rollout(s0, actions, z)
        s, slow = s0, []
        for t in range(5):
            s = model.step(s, actions[t], z[t])
            slow.append(s)
    torch.testing.assert_close(fast, torch.stack(slow), rtol=1e-5, atol=1e-5)


def test_step_names_a_latent_of_the_wrong_size() -> None:
    model = _cvae(latent_dropout=0.5)
    with pytest.raises(DataError, match=r"ForwardModel.step: latent has shape \(5, 3\)"):
        model.step(torch.zeros(5, 3), torch.zeros(5, 2), torch.zeros(5, 3))


def test_a_model_with_default_arguments_is_the_configurator_default_model() -> None:
    from agents.configurator.assemble import build_model
    from agents.configurator.config import ModelConfig

    torch.manual_seed(0)
    default = ForwardModel(S, A)
    torch.manual_seed(0)
    configured = build_model(ModelConfig(), S, A)
    for name in ("latent_dim", "latent_dropout", "latent_dropout_mode", "beta"):
        assert getattr(default, name) == getattr(configured, name), name
    shapes = {k: v.shape for k, v in default.state_dict().items()}
    assert shapes == {k: v.shape for k, v in configured.state_dict().items()}
    rates = [m.p for m in default.modules() if isinstance(m, nn.Dropout)]
    assert rates == [m.p for m in configured.modules() if isinstance(m, nn.Dropout)]
    assert len(rates) == ModelConfig().layers and shapes["decoder.0.weight"] == (
        ModelConfig().hidden,
        S + A + ModelConfig().latent_dim,
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"state_dim": 0}, {"action_dim": 0}, {"hidden": 0}, {"layers": 0}, {"latent_dim": -1}],
)
def test_a_model_size_below_its_minimum_is_refused(kwargs: dict) -> None:
    sizes = {"state_dim": S, "action_dim": A, "hidden": 8} | kwargs
    with pytest.raises(
        ValueError,
        match=r"^model sizes must be positive \(latent_dim may be 0 for deterministic\)$",
    ):
        ForwardModel(**sizes)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latent_dropout": 1.5},
        {"latent_dropout": -0.1},
        {"dropout": 1.0},
        {"dropout": 1.5},
        {"dropout": -0.1},
    ],  # fmt: skip
)
def test_a_dropout_rate_outside_its_range_is_refused(kwargs: dict) -> None:
    with pytest.raises(
        ValueError, match=r"^latent_dropout must be in \[0, 1\] and dropout in \[0, 1\)$"
    ):
        ForwardModel(S, A, hidden=8, **kwargs)


def test_a_float64_model_draws_float64_latents_and_rolls_out_in_float64() -> None:
    torch.manual_seed(0)
    model = ForwardModel(S, A, hidden=16, layers=1).double().eval()
    assert model.sample_prior(2, 3).dtype == torch.float64
    s0, actions = torch.randn(3, S, dtype=torch.float64), torch.rand(2, 3, A, dtype=torch.float64)
    assert model.rollout(s0, actions).dtype == torch.float64
    assert model.step(s0, actions[0]).dtype == torch.float64


@pytest.mark.parametrize("which", ["state", "action"])
def test_step_names_a_state_or_action_of_the_wrong_size(which: str) -> None:
    model = _cvae(latent_dropout=0.5)
    s, a = torch.zeros(5, 3), torch.zeros(5, 2)
    bad = torch.zeros(5, 7)
    args = (bad, a) if which == "state" else (s, bad)
    with pytest.raises(DataError, match=rf"ForwardModel.step: {which} has shape \(5, 7\)"):
        model.step(*args)
    with pytest.raises(DataError, match=rf"ForwardModel.step: {which} has shape \(\)"):
        model.step(*((torch.tensor(0.0), a) if which == "state" else (s, torch.tensor(0.0))))


def test_step_takes_any_leading_dims_including_none() -> None:
    model = _cvae(latent_dropout=0.5).eval()
    g = torch.Generator().manual_seed(7)
    s, a, z = (
        torch.randn(2, 4, 3, generator=g),
        torch.randn(2, 4, 2, generator=g),
        torch.randn(2, 4, 4, generator=g),
    )
    with torch.no_grad():
        batched = model.step(s, a, z)
        for i in range(2):
            for j in range(4):
                torch.testing.assert_close(batched[i, j], model.step(s[i, j], a[i, j], z[i, j]))


def test_rollout_names_a_latent_of_the_wrong_size() -> None:
    model = _cvae(latent_dropout=0.5)
    s0, actions = torch.zeros(5, 3), torch.zeros(4, 5, 2)
    with pytest.raises(DataError, match=r"ForwardModel.rollout: latent has shape \(4, 5, 3\)"):
        model.rollout(s0, actions, torch.zeros(4, 5, 3))


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


def _stats(seed: int) -> Stats:
    g = torch.Generator().manual_seed(seed)
    return Stats(*(torch.rand(3, generator=g) + 0.5 for _ in range(4)))


def test_an_unknown_latent_dropout_mode_is_refused_with_the_modes() -> None:
    with pytest.raises(
        ValueError, match=r"^latent_dropout_mode must be one of \('prior', 'zero'\)$"
    ):
        ForwardModel(S, A, hidden=8, latent_dropout_mode="mean")


def test_the_boundary_rates_are_accepted_and_kept_as_given() -> None:
    """latent_dropout 0 and 1 and dropout 0 are allowed; the model keeps what it was given."""
    model = ForwardModel(3, 2, latent_dim=5, hidden=8, layers=1, dropout=0.0, latent_dropout=1.0,
                         latent_dropout_mode="zero", beta=0.25)  # fmt: skip
    assert (model.state_dim, model.action_dim, model.latent_dim) == (3, 2, 5)
    assert (model.latent_dropout, model.latent_dropout_mode, model.beta) == (1.0, "zero", 0.25)
    assert ForwardModel(3, 2, hidden=8, latent_dropout=0.0).latent_dropout == 0.0


@pytest.mark.parametrize("layers", [1, 3])
def test_the_encoder_reads_s_a_delta_through_one_layer_fewer_and_has_no_dropout(
    layers: int,
) -> None:
    """Encoder: [2S + A] -> hidden x max(layers - 1, 1) -> [2Z], no dropout; decoder:
    [S + A + Z] -> hidden x layers -> [S] with dropout; the decoder's log-scale starts at 0."""
    model = ForwardModel(3, 2, latent_dim=4, hidden=16, layers=layers, dropout=0.1)

    def sizes(net: nn.Module) -> list[tuple[int, int]]:
        return [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)]

    enc_hidden = max(layers - 1, 1)
    assert sizes(model.encoder) == [(8, 16)] + [(16, 16)] * (enc_hidden - 1) + [(16, 8)]
    assert not any(isinstance(m, nn.Dropout) for m in model.encoder)
    assert sizes(model.decoder) == [(9, 16)] + [(16, 16)] * (layers - 1) + [(16, 3)]
    assert [m.p for m in model.decoder if isinstance(m, nn.Dropout)] == [0.1] * layers
    assert model.log_std.tolist() == [0.0, 0.0, 0.0] and model.log_std.requires_grad
    assert not hasattr(ForwardModel(3, 2, latent_dim=0, hidden=8), "log_std")


def test_a_step_adds_the_denormalised_decoder_output_to_the_state() -> None:
    """s' = s + G([(s - mu_s) / sd_s, a, z]) * sd_delta + mu_delta, by hand."""
    model = _cvae(latent_dropout=0.5).eval()
    stats = _stats(9)
    model.set_normalization(stats)
    g = torch.Generator().manual_seed(9)
    s, a, z = (
        torch.randn(5, 3, generator=g),
        torch.randn(5, 2, generator=g),
        torch.randn(5, 4, generator=g),
    )
    with torch.no_grad():
        out = model.decoder(torch.cat([(s - stats.state_mean) / stats.state_std, a, z], -1))
        torch.testing.assert_close(
            model.step(s, a, z), s + out * stats.delta_std + stats.delta_mean
        )


def test_step_and_rollout_draw_their_latents_from_the_generator() -> None:
    """Without z, step and rollout use `sample_prior` of the generator, for any leading dims."""
    model = _cvae(latent_dropout=0.5).eval()
    g = torch.Generator().manual_seed(2)
    s, a = torch.randn(2, 3, 3, generator=g), torch.randn(2, 3, 2, generator=g)
    with torch.no_grad():
        drawn = model.step(s, a, generator=torch.Generator().manual_seed(4))
        z = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(drawn, model.step(s, a, z))
        s0, actions = s[0], torch.randn(5, 3, 2, generator=g)
        drawn = model.rollout(s0, actions, generator=torch.Generator().manual_seed(6))
        z = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(6))
        torch.testing.assert_close(drawn, model.rollout(s0, actions, z))


def test_a_longer_z_is_cut_to_the_horizon_and_batch_dims_may_be_several() -> None:
    """z longer than the actions is cut to their horizon; batch dims [T, B1, B2, .] are rows."""
    model = _cvae(latent_dropout=0.5).eval()
    g = torch.Generator().manual_seed(3)
    s0, actions, z = (
        torch.randn(4, 3, generator=g), torch.randn(5, 4, 2, generator=g),
        torch.randn(7, 4, 4, generator=g),
    )  # fmt: skip
    with torch.no_grad():
        batched = model.rollout(s0, actions, z[:5])
        torch.testing.assert_close(model.rollout(s0, actions, z), batched)
        two = model.rollout(s0.view(2, 2, 3), actions.view(5, 2, 2, 2), z[:5].view(5, 2, 2, 4))
        torch.testing.assert_close(two, batched.view(5, 2, 2, 3))


@pytest.mark.parametrize(
    "shapes",
    [
        ((3,), (2,), None),  # actions without a time dim
        ((3,), (5, 2), None),  # actions without a batch dim (a batch of one is [T, 1, A])
        ((4, 3), (5, 6, 2), None),  # s0's batch is not the actions'
        ((6, 3), (5, 6, 2), (4,)),  # z without time and batch dims
        ((6, 3), (5, 6, 2), (5, 4, 4)),  # z's batch is not the actions'
        ((6, 3), (5, 6, 2), (4, 6, 4)),  # z shorter than the actions
    ],
)
def test_rollout_names_every_shape_when_they_do_not_fit_together(shapes: tuple) -> None:
    model = _cvae(latent_dropout=0.5)
    s0, actions, z = (None if shape is None else torch.zeros(shape) for shape in shapes)
    message = (
        r"^ForwardModel.rollout: need s0 \[B, 3\], actions \[T, B, 2\], z \[T, B, 4\]; got "
        + re.escape(f"{shapes[0]}, {shapes[1]}, {shapes[2]}")
        + "$"
    )
    with pytest.raises(DataError, match=message):
        model.rollout(s0, actions, z)


def test_uncertainty_needs_two_masks_and_uses_eight_by_default() -> None:
    """n < 2 is refused (a variance needs two samples); n = 2 is allowed; the default is 8
    (the same dropout masks as n = 8, not those of 9); without z, one prior draw of the
    generator is shared by all masks."""
    torch.manual_seed(0)
    model = ForwardModel(3, 2, latent_dim=4, hidden=16, layers=1, dropout=0.3).eval()
    s0, actions = torch.randn(4, 3), torch.randn(5, 4, 2)
    z = torch.randn(5, 4, 4)
    with pytest.raises(ValueError, match=r"^uncertainty needs n >= 2 dropout masks, got 1$"):
        model.uncertainty(s0, actions, n=1, z=z)
    assert model.uncertainty(s0, actions, n=2, z=z).shape == (5, 4)

    def seeded(**kw: object) -> torch.Tensor:
        torch.manual_seed(1)
        with torch.no_grad():
            return model.uncertainty(s0, actions, **kw)

    torch.testing.assert_close(seeded(z=z), seeded(n=8, z=z))
    assert not torch.allclose(seeded(z=z), seeded(n=9, z=z))
    drawn = seeded(generator=torch.Generator().manual_seed(5))
    given = seeded(z=torch.randn(5, 4, 4, generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close(drawn, given)


def _expected_terms(
    model: ForwardModel, w: Window, kept: torch.Tensor, dropped: torch.Tensor,
    g: torch.Generator,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """The CVAE's per-window ELBO terms and energy by hand, with torch.distributions, drawing
    from g in the model's order: the posterior's noise step by step, then the prior's z."""
    horizon, half_log_2pi = w.action.shape[0], 0.5 * math.log(2 * math.pi)
    obs, act = w.obs[:, kept], w.action[:, kept]
    s, nll, kl, squared = obs[0], 0.0, 0.0, 0.0
    scale = torch.distributions.Normal(0.0, model.log_std.clamp(min=-7.0).exp())
    prior = torch.distributions.Normal(0.0, 1.0)
    for t in range(horizon):
        mu, logvar = model._posterior(s, act[t], obs[t + 1])
        noise = torch.randn(mu.shape, generator=g)
        q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
        kl = kl + torch.distributions.kl_divergence(q, prior).sum(-1)
        s = model.step(s, act[t], mu + noise * (0.5 * logvar).exp())
        error = (s - obs[t + 1]) / model.delta_std
        nll = nll - (scale.log_prob(error) + half_log_2pi).sum(-1)
        squared = squared + error.square().mean(-1)
    obs, act = w.obs[:, dropped], w.action[:, dropped]
    z = model.sample_prior(horizon, 2, obs.shape[1], generator=g)
    states, energy = obs[0].expand(2, -1, -1), 0.0
    for t in range(horizon):
        states = model.step(states, act[t].expand(2, -1, -1), z[t])
        errors = ((states - obs[t + 1]) / model.delta_std).norm(dim=-1).mean(0)
        spread = ((states[0] - states[1]) / model.delta_std).norm(dim=-1)
        energy = energy + errors - 0.5 * spread
    n = horizon * 3
    return nll / n, kl / n, squared / horizon, energy / (horizon * 3**0.5)


def _loss_case() -> tuple[ForwardModel, Window]:
    torch.manual_seed(0)
    model = ForwardModel(3, 2, latent_dim=4, hidden=16, layers=2, dropout=0.0,
                         latent_dropout=0.5, beta=0.7)  # fmt: skip
    model.set_normalization(_stats(11))
    with torch.no_grad():
        model.log_std.copy_(torch.tensor([-9.0, 0.3, -0.5]))  # -9 is held at the floor, -7
        model.encoder[-1].bias.copy_(torch.linspace(-1.5, 1.5, 8))
    g = torch.Generator().manual_seed(11)
    obs = torch.randn(3, 10, 3, generator=g).cumsum(0)
    return model, Window(obs, torch.randn(2, 10, 2, generator=g), torch.zeros(2, 10),
                         torch.zeros(2, 10, dtype=torch.bool))  # fmt: skip


def test_the_training_loss_is_the_elbo_of_kept_and_the_energy_of_dropped_windows() -> None:
    """Each window is dropped when its uniform draw is below `latent_dropout`; the loss is
    (sum of NLL + beta KL over kept windows + sum of energies over dropped ones) / B, over a
    2-step unroll, and the logged terms are their means over their own windows."""
    model, w = _loss_case()
    with torch.no_grad():
        terms = model.loss(w, generator=torch.Generator().manual_seed(12))
        g = torch.Generator().manual_seed(12)
        dropped = torch.rand(10, generator=g) < 0.5
        assert 0 < dropped.sum() < 10
        nll, kl, squared, energy = _expected_terms(model, w, ~dropped, dropped, g)
    torch.testing.assert_close(terms.loss, ((nll + 0.7 * kl).sum() + energy.sum()) / 10)
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


def test_normalized_error_is_the_mean_squared_error_in_state_units() -> None:
    """((p - t) / sd)^2 averaged over the last dim only, for any leading dims."""
    model = ForwardModel(2, 1, hidden=8)
    model.set_normalization(
        Stats(torch.zeros(2), torch.tensor([2.0, 0.5]), torch.zeros(2), torch.ones(2))
    )
    predicted = torch.tensor([[[3.0, 2.0]], [[5.0, 1.0]]])  # [2, 1, 2]
    target = torch.tensor([[[2.0, 1.0]], [[2.0, 1.0]]])
    # [(1/2)^2 + (1/0.5)^2] / 2 = 2.125, [(3/2)^2 + 0] / 2 = 1.125
    torch.testing.assert_close(
        normalized_error(model, predicted, target), torch.tensor([[2.125], [1.125]])
    )
