"""`worldmodel.forward.layers`: the MLP's layout, its functional form, and the mode switches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from worldmodel.data.store import Stats
from worldmodel.forward.layers import (
    NormalizedModel,
    dropout_masks,
    eval_mode,
    frozen,
    functional,
    mc_dropout,
    mlp,
)


def _types(blocks: nn.Sequential) -> list[type]:
    return [type(b) for b in blocks]


def test_an_mlp_is_linear_layernorm_silu_dropout_blocks_then_a_head() -> None:
    block = [nn.Linear, nn.LayerNorm, nn.SiLU]
    assert _types(mlp(3, 8, 2, 2, 0.1)) == (block + [nn.Dropout]) * 2 + [nn.Linear]
    # no dropout layer at rate 0: the state-dict keys (decoder.3.weight, ...) depend on it
    assert _types(mlp(3, 8, 2, 2, 0.0)) == block * 2 + [nn.Linear]
    assert list(mlp(3, 8, 2, 1, 0.0).state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias",
    ]  # fmt: skip


def test_an_mlp_without_hidden_layers_is_one_affine_map_from_input_to_output() -> None:
    torch.manual_seed(0)
    net = mlp(3, 8, 2, 0, 0.0)
    (head,) = net
    assert (head.in_features, head.out_features) == (3, 2)
    x = torch.randn(5, 3)
    torch.testing.assert_close(net(x), x @ head.weight.t() + head.bias)


def test_the_functional_form_equals_the_modules_with_a_layernorm_of_its_own_eps() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4, eps=0.5), nn.SiLU(), nn.Linear(4, 2))
    x = torch.randn(6, 3) * 0.1  # small activations: eps 0.5 against 1e-5 shows
    h = x
    for layer in functional(net):
        h = layer(h)
    torch.testing.assert_close(h, net(x))


def test_the_functional_form_keeps_active_dropout_and_drops_it_in_eval_mode() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5))
    x = torch.ones(200, 3)
    torch.manual_seed(1)
    expected = net.train()(x)
    torch.manual_seed(1)
    h = x
    for layer in functional(net):
        h = layer(h)
    torch.testing.assert_close(h, expected)
    assert (h == 0).any()
    assert len(functional(net.eval())) == 1


def test_given_masks_replace_the_dropout_layers_in_any_mode_and_stay_fixed() -> None:
    """`functional(blocks, masks)` multiplies by the given masks where the dropout layers were,
    in training and in eval mode alike, and by the same masks at every call; a wrong count of
    masks is refused."""
    torch.manual_seed(0)
    net = mlp(3, 8, 2, 2, 0.5)
    masks = dropout_masks(net, 4)
    assert [m.shape for m in masks] == [(4, 8), (4, 8)]
    assert all(set(m.unique().tolist()) == {0.0, 2.0} for m in masks)  # kept: 1 / (1 - p)
    x = torch.randn(4, 3)
    h = x
    for block, mask in ((net[0:3], masks[0]), (net[4:7], masks[1])):
        h = block(h) * mask
    expected = net[-1](h)
    for mode in (True, False):
        net.train(mode)
        layers = functional(net, masks)
        for _ in range(2):
            out = x
            for layer in layers:
                out = layer(out)
            torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="1 dropout masks"):
        functional(net, masks[:1])


def test_dropout_masks_keep_each_unit_with_probability_one_minus_p() -> None:
    torch.manual_seed(0)
    (mask,) = dropout_masks(mlp(3, 64, 2, 1, 0.2), 2000)
    assert (mask > 0).float().mean().item() == pytest.approx(0.8, abs=0.01)
    assert mask.max().item() == pytest.approx(1.25)


def test_eval_mode_leaves_an_object_that_is_no_module_alone() -> None:
    class Dynamics:
        training = True

    dynamics = Dynamics()
    with eval_mode(dynamics):
        assert dynamics.training
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)).train()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert all(m.training for m in net.modules())


@pytest.mark.parametrize("layers", [1, 3])
def test_an_mlp_maps_inp_to_out_through_hidden(layers: int) -> None:
    net = mlp(5, 7, 2, layers, 0.0)
    linears = [b for b in net if isinstance(b, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == (
        [(5, 7)] + [(7, 7)] * (layers - 1) + [(7, 2)]
    )


def test_a_zero_rate_dropout_costs_no_call_even_in_training_mode() -> None:
    """`functional` leaves out a dropout that cannot drop anything (p = 0), as in eval mode."""
    net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.0)).train()
    assert len(functional(net)) == 1


def test_mc_dropout_switches_on_only_the_dropout_layers_and_restores_each_mode() -> None:
    """Inside `mc_dropout` every dropout trains and nothing else changes; afterwards each
    module has the mode it had before, even a dropout that was already training."""
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1), nn.LayerNorm(2), nn.Dropout(0.2)).eval()
    net[3].train()
    before = [m.training for m in net.modules()]
    with mc_dropout(net):
        assert [m.training for m in net.modules()] == [False, False, True, False, True]
    assert [m.training for m in net.modules()] == before == [False, False, False, False, True]


def test_the_mode_switches_restore_the_modes_when_the_body_raises() -> None:
    """A planner that fails inside `eval_mode` or `mc_dropout` leaves the model as it was."""
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)).train()
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError
    assert all(m.training for m in net.modules())
    net.eval()
    with pytest.raises(RuntimeError), mc_dropout(net):
        raise RuntimeError
    assert not any(m.training for m in net.modules())


def test_frozen_stops_weight_gradients_but_not_input_gradients_and_restores_them() -> None:
    """Inside `frozen` no weight gets a gradient while the input still does; afterwards the
    weights that required gradients do again, and a weight frozen before stays frozen."""
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    net.bias.requires_grad_(False)
    x = torch.randn(4, 3, requires_grad=True)
    with frozen(net):
        assert not net.weight.requires_grad
        net(x).sum().backward()
    assert net.weight.grad is None
    torch.testing.assert_close(x.grad, net.weight.detach().sum(0).expand(4, 3))
    assert net.weight.requires_grad and not net.bias.requires_grad
    with pytest.raises(RuntimeError), frozen(net):
        raise RuntimeError
    assert net.weight.requires_grad


class _Model(NormalizedModel):
    latent_dim = 3


def test_normalisation_buffers_start_as_the_identity_and_take_the_data_statistics() -> None:
    """Means start at 0 and stds at 1 (normalising is the identity before `set_normalization`);
    `set_normalization` copies each statistic into its own buffer, and they travel in the
    state dict, so a model loaded from it normalises the same."""
    model = _Model(2)
    assert model.state_mean.tolist() == [0.0, 0.0] and model.delta_mean.tolist() == [0.0, 0.0]
    assert model.state_std.tolist() == [1.0, 1.0] and model.delta_std.tolist() == [1.0, 1.0]
    stats = Stats(
        torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]),
        torch.tensor([5.0, 6.0]), torch.tensor([7.0, 8.0]),
    )  # fmt: skip
    model.set_normalization(stats)
    assert model.state_mean.tolist() == [1.0, 2.0] and model.state_std.tolist() == [3.0, 4.0]
    assert model.delta_mean.tolist() == [5.0, 6.0] and model.delta_std.tolist() == [7.0, 8.0]
    loaded = _Model(2)
    loaded.load_state_dict(model.state_dict())
    for name in ("state_mean", "state_std", "delta_mean", "delta_std"):
        torch.testing.assert_close(getattr(loaded, name), getattr(model, name))
    assert model.device == torch.device("cpu")


def test_prior_draws_are_standard_normal_of_the_latent_size_from_the_generator() -> None:
    """z [*shape, latent_dim] is `torch.randn` of the given generator, in the model's dtype."""
    model = _Model(2)
    z = model.sample_prior(4, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(z, torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(3)))
    assert model.double().sample_prior(2, generator=torch.Generator()).dtype == torch.float64
