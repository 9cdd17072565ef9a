"""ForwardModel's sizes and arguments, step and rollout, and its MC-dropout uncertainty."""

import re

import pytest
import torch
from model_cases import A, S, _cvae, _stats, window
from torch import nn

from worldmodel.data.store import Stats
from worldmodel.errors import DataError
from worldmodel.forward.evaluate import normalized_error
from worldmodel.forward.layers import mc_dropout
from worldmodel.forward.model import ForwardModel


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
        z = model.sample_prior(2, 3, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(drawn, model.step(s, a, z))
        s0, actions = s[0], torch.randn(5, 3, 2, generator=g)
        drawn = model.rollout(s0, actions, generator=torch.Generator().manual_seed(6))
        z = model.sample_prior(5, 3, generator=torch.Generator().manual_seed(6))
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


def test_each_uncertainty_rollout_keeps_its_dropout_mask_for_all_its_steps() -> None:
    """With a decoder blind to the state and a constant input, a rollout under one mask moves by
    the same delta every step, so the variance over masks grows as t^2 (fresh masks at each step
    would give t: a random walk)."""
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=0, hidden=16, layers=1, dropout=0.3).eval()
    with torch.no_grad():
        model.decoder[0].weight[:, :2] = 0.0  # the state's columns
    s0, actions = torch.zeros(1, 2), torch.full((4, 1, 1), 0.7)
    with torch.no_grad():
        u = model.uncertainty(s0, actions, n=4000)[:, 0]
    growth = (u / u[0]).tolist()
    assert growth == pytest.approx([1.0, 4.0, 9.0, 16.0], rel=1e-4)


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
    given = seeded(z=model.sample_prior(5, 4, generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close(drawn, given)


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
