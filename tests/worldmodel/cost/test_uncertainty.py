"""The uncertainty penalty's own contract: uncalibrated it refuses to score, its hinge starts at
`threshold` standard deviations, and U is measured with only the dropout layers switched on."""

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from agents.configurator.config import PolicyConfig
from worldmodel.cost.uncertainty import UncertaintyPenalty
from worldmodel.forward.model import ForwardModel

T, B = 3, 2


def test_an_uncalibrated_penalty_covers_no_steps_and_refuses_to_score() -> None:
    penalty = UncertaintyPenalty(None)  # type: ignore[arg-type]
    assert penalty.horizon == 0
    message = r"^UncertaintyPenalty used before calibrate\(\); calibrate on real data$"
    with pytest.raises(RuntimeError, match=message):
        penalty(torch.zeros(T, B))


def test_a_penalty_with_a_mean_but_no_std_is_still_uncalibrated() -> None:
    penalty = UncertaintyPenalty(None)  # type: ignore[arg-type]
    penalty.mean = torch.zeros(T)
    assert penalty.horizon == T
    with pytest.raises(RuntimeError, match="used before calibrate"):
        penalty.normalized(torch.zeros(T, B))


def test_the_default_threshold_is_the_configurators() -> None:
    default = UncertaintyPenalty(None)  # type: ignore[arg-type]
    assert default.threshold == PolicyConfig().uncertainty_threshold == 1.0
    default.mean, default.std = torch.zeros(T), torch.ones(T)
    # The hinge starts `threshold` standard deviations above the mean: 1.5 sd pays 0.5.
    u = torch.tensor([0.5, 1.5, 3.0])[:, None].expand(T, B)
    torch.testing.assert_close(default(u)[:, 0], torch.tensor([0.0, 0.5, 2.0]))


class _ModeSpy(ForwardModel):
    """Records every module's training flag as `uncertainty` is entered."""

    seen: list[bool]

    def uncertainty(self, *args: Any, **kwargs: Any) -> Tensor:
        self.seen = [m.training for m in self.modules()]
        return super().uncertainty(*args, **kwargs)


def test_raw_measures_with_the_model_in_eval_mode_and_restores_the_trainers_mode() -> None:
    torch.manual_seed(0)
    model = _ModeSpy(2, 1, latent_dim=2, hidden=8, layers=2, dropout=0.3).train()
    penalty = UncertaintyPenalty(model, masks=4)
    u = penalty.raw(torch.zeros(B, 2), torch.zeros(T, B, 1), torch.zeros(T, B, 2))
    assert not any(model.seen), "raw let the trainer's mode into the measurement"
    assert all(m.training for m in model.modules())
    assert any(isinstance(m, nn.Dropout) for m in model.modules()) and (u > 0).all()
