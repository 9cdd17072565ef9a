import pytest
import torch

from worldmodel.cost.risk import Risk


def test_mean_risk_is_the_mean_over_futures() -> None:
    costs = torch.tensor([[1.0, 10.0], [3.0, 0.0], [5.0, 2.0]])  # [K=3, N=2]
    torch.testing.assert_close(Risk("mean")(costs), torch.tensor([3.0, 4.0]))


def test_cvar_averages_the_worst_share_of_futures() -> None:
    costs = torch.arange(10.0)[:, None].expand(10, 2) * torch.tensor([1.0, -1.0])
    # worst 20 % of 0..9 is {9, 8}; of 0..-9 it is {0, -1}
    torch.testing.assert_close(Risk("cvar", 0.2)(costs), torch.tensor([8.5, -0.5]))
    torch.testing.assert_close(Risk("cvar", 1.0)(costs), costs.mean(0))
    # a share below one sample still takes the worst one
    torch.testing.assert_close(Risk("cvar", 0.01)(costs), torch.tensor([9.0, 0.0]))


def test_cvar_prefers_the_safe_candidate_the_mean_does_not() -> None:
    risky = torch.tensor([0.0, 0.0, 0.0, 0.0, 3.0])  # cheap on average, one disaster
    safe = torch.full((5,), 0.8)
    costs = torch.stack([risky, safe], 1)
    assert Risk("mean")(costs).argmin().item() == 0
    assert Risk("cvar", 0.2)(costs).argmin().item() == 1


@pytest.mark.parametrize(
    ("kind", "alpha", "message"),
    [
        ("max", 0.2, "risk must be one of"),
        ("cvar", 0.0, "alpha must be in"),
        ("cvar", 1.5, "alpha must be in"),
    ],
)
def test_bad_risk_settings_are_refused(kind: str, alpha: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Risk(kind, alpha)
