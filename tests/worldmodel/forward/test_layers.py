"""`worldmodel.forward.layers`: the MLP's layout, its functional form, and the mode switches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from worldmodel.forward.layers import eval_mode, functional, mlp


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
