"""The decoder's Gaussian likelihood and the ELBO's weights, against their closed forms."""

import math

import pytest
import torch

from worldmodel.forward.likelihood import MIN_LOG_STD, elbo_weights, gaussian_nll


def test_gaussian_nll_is_the_normal_log_density_up_to_its_constant() -> None:
    torch.manual_seed(0)
    error, log_std = torch.randn(5, 3), torch.randn(3)
    expected = -torch.distributions.Normal(0.0, log_std.exp()).log_prob(error)
    assert torch.allclose(gaussian_nll(error, log_std) + 0.5 * math.log(2 * math.pi), expected)


def test_gaussian_nll_floors_the_scale() -> None:
    tiny = torch.full((2,), -50.0)
    floor = torch.full((2,), MIN_LOG_STD)
    assert torch.equal(gaussian_nll(torch.ones(2), tiny), gaussian_nll(torch.ones(2), floor))


@pytest.mark.parametrize("mode", ["none", "variance", "per_dim"])
def test_elbo_weights_are_detached_and_keep_the_mean_variance(mode: str) -> None:
    log_std = torch.tensor([0.0, math.log(2.0), math.log(0.5)], requires_grad=True)
    per_dim, scalar = elbo_weights(log_std, mode)
    assert not per_dim.requires_grad and not scalar.requires_grad
    variance = torch.tensor([1.0, 4.0, 0.25])
    if mode == "none":
        assert torch.equal(per_dim, torch.ones(3)) and scalar.item() == 1.0
    elif mode == "variance":
        assert torch.equal(per_dim, torch.ones(3))
        assert scalar.item() == pytest.approx(variance.mean().item())
    else:  # beta-NLL with beta = 1: each dim's NLL times sigma_d^2, factored as below
        assert torch.allclose(per_dim * scalar, variance)
        assert per_dim.mean().item() == pytest.approx(1.0)


def test_elbo_weights_refuse_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="elbo_weight must be one of"):
        elbo_weights(torch.zeros(2), "beta")
