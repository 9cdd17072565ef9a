"""The uncertainty penalty's own contract: uncalibrated it refuses to score, its hinge starts at
`threshold` standard deviations, and U is measured with only the dropout layers switched on."""

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from agents.configurator.config import PolicyConfig
from worldmodel.cost.uncertainty import UncertaintyPenalty
from worldmodel.data.store import EpisodeStore
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


def _dropout_model() -> ForwardModel:
    torch.manual_seed(0)
    return ForwardModel(2, 1, latent_dim=2, hidden=8, layers=2, dropout=0.3)


def test_by_default_u_is_the_variance_over_8_dropout_masks() -> None:
    """`masks` defaults to 8: `raw` equals the model's uncertainty over 8 masks, drawn from the
    same torch seed (9 masks give another value)."""
    model = _dropout_model()
    penalty = UncertaintyPenalty(model)
    assert penalty.masks == 8
    s0, actions, z = torch.zeros(B, 2), torch.ones(T, B, 1), torch.zeros(T, B, 2)
    torch.manual_seed(1)
    got = penalty.raw(s0, actions, z)
    with torch.no_grad():
        model.eval()
        torch.manual_seed(1)
        eight = model.uncertainty(s0, actions, 8, z)
        torch.manual_seed(1)
        nine = model.uncertainty(s0, actions, 9, z)
    torch.testing.assert_close(got.detach(), eight)
    assert not torch.allclose(eight, nine)


def _store(lengths: list[int]) -> EpisodeStore:
    rng = np.random.default_rng(0)
    store = EpisodeStore(2, 1)
    for n in lengths:
        obs = rng.normal(size=(n, 2))
        store.add_episode(obs, rng.uniform(-1, 1, (n, 1)), np.zeros(n), obs + 0.1,
                          np.zeros(n), np.zeros(n))  # fmt: skip
    return store


def test_calibrate_from_a_store_calibrates_on_512_windows_drawn_from_it() -> None:
    """By default `calibrate_from` is `calibrate` on `store.sample(512, horizon, rng)`: same
    statistics (same torch seed), and the rng left where 512 draws leave it."""
    store, horizon = _store([6, 9, 4]), 3
    model = _dropout_model()
    penalty, by_hand = UncertaintyPenalty(model, masks=4), UncertaintyPenalty(model, masks=4)
    rng = np.random.default_rng(5)
    torch.manual_seed(2)
    assert penalty.calibrate_from(store, horizon, rng) is True
    rng_by_hand = np.random.default_rng(5)
    torch.manual_seed(2)
    by_hand.calibrate(store.sample(512, horizon, rng_by_hand))
    assert penalty.horizon == horizon
    torch.testing.assert_close(penalty.mean, by_hand.mean)
    torch.testing.assert_close(penalty.std, by_hand.std)
    assert rng.integers(1 << 30) == rng_by_hand.integers(1 << 30)


def test_calibrate_from_a_store_without_a_long_enough_episode_leaves_it_uncalibrated() -> None:
    """No episode reaches the horizon: False, nothing drawn, still uncalibrated."""
    penalty = UncertaintyPenalty(_dropout_model(), masks=4)
    rng = np.random.default_rng(5)
    assert penalty.calibrate_from(_store([3, 2]), 4, rng) is False
    assert penalty.horizon == 0 and penalty.mean is None
    assert rng.integers(1 << 30) == np.random.default_rng(5).integers(1 << 30)


def test_recalibrating_writes_the_statistics_into_the_same_tensors() -> None:
    """A planner captured as a CUDA graph reads mean and std from their memory: a later
    calibration must land there (new values, same storage), not in new tensors."""
    store = _store([6, 9, 4])
    penalty = UncertaintyPenalty(_dropout_model(), masks=4)
    torch.manual_seed(0)
    penalty.calibrate_from(store, 3, np.random.default_rng(0), windows=8)
    mean, std, first = penalty.mean, penalty.std, penalty.mean.clone()
    torch.manual_seed(1)
    penalty.calibrate_from(store, 3, np.random.default_rng(1), windows=8)
    assert penalty.mean is mean and penalty.std is std
    assert not torch.equal(mean, first)
