"""Windows that end in a termination: sampled for training, trained on up to the termination
and masked after it (world model, ensemble and learned-cost losses), never dropped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldmodel.cost.learned import CostStats, LearnedCost
from worldmodel.data.store import EpisodeStore, Window
from worldmodel.forward.ensemble import EnsembleModel
from worldmodel.forward.fit import FitSchedule, ModelTrainer, fit_world_model
from worldmodel.forward.model import ForwardModel


def _episode(store: EpisodeStore, n: int, terminated: bool, base: float) -> None:
    """n steps of s' = s + a (1-D), obs counting up from `base`; ends terminated or truncated."""
    obs = base + np.arange(n, dtype=np.float64)[:, None]
    action = np.ones((n, 1))
    end = np.r_[np.zeros(n - 1, bool), [True]]
    store.add_episode(obs, action, -obs[:, 0], obs + 1.0, end & terminated, end & ~terminated)


def _store() -> EpisodeStore:
    store = EpisodeStore(1, 1)
    _episode(store, 3, True, 0.0)  # steps 0-2, terminated
    _episode(store, 4, False, 10.0)  # steps 3-6, truncated
    _episode(store, 2, True, 20.0)  # steps 7-8, terminated
    return store


def test_terminal_windows_start_anywhere_in_a_terminated_episode_not_a_truncated_one() -> None:
    store = _store()
    assert store.window_starts(3).tolist() == [0, 3, 4]
    assert store.window_starts(3, terminal=True).tolist() == [0, 1, 2, 3, 4, 7, 8]
    assert store.window_starts(5, terminal=True).tolist() == [0, 1, 2, 7, 8]  # none is whole


@pytest.mark.parametrize("horizon", [1, 2, 4, 7])
def test_terminal_window_starts_equal_a_brute_force_enumeration(horizon: int) -> None:
    rng = np.random.default_rng(horizon)
    store = EpisodeStore(1, 1)
    for i in range(12):
        _episode(store, int(rng.integers(1, 9)), bool(rng.integers(2)), 100.0 * i)
    episode, terminated = store.data["episode"], store.data["terminated"]
    expected = []
    for i in range(len(store)):
        same = np.flatnonzero(episode == episode[i])
        whole = i + horizon - 1 <= same[-1]
        expected += [i] if whole or terminated[same[-1]] else []
    assert store.window_starts(horizon, terminal=True).tolist() == expected


def test_a_window_past_its_termination_repeats_the_terminal_state_and_is_masked() -> None:
    window = _store().windows(np.array([1, 3, 8]), 3)
    # Start 1 has 2 real steps (1, 2 -> terminal 3.0); start 8 has 1 (20, 21 -> 22 terminal).
    assert window.obs[:, :, 0].T.tolist() == [[1, 2, 3, 3], [10, 11, 12, 13], [21, 22, 22, 22]]
    assert window.mask.T.tolist() == [[True, True, False], [True] * 3, [True, False, False]]
    assert window.action[:, :, 0].T.tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0]]
    assert window.reward.T.tolist() == [[-1, -2, 0], [-10, -11, -12], [-21, 0, 0]]
    assert window.terminated.T.tolist() == [[False, True, False], [False] * 3, [True, False, False]]
    whole = _store().windows(np.array([0, 3]), 3)
    assert whole.mask is None and whole.step_mask().tolist() == [[1.0, 1.0]] * 3
    assert window.to("cpu").mask.tolist() == window.mask.tolist()


def test_sampling_for_training_draws_terminal_windows_and_by_default_only_whole_ones() -> None:
    store = _store()
    rng = np.random.default_rng(0)
    starts = set(store.sample(400, 3, rng, terminal=True).obs[0, :, 0].tolist())
    assert starts == {0.0, 1.0, 2.0, 10.0, 11.0, 20.0, 21.0}
    assert set(store.sample(400, 3, rng).obs[0, :, 0].tolist()) == {0.0, 10.0, 11.0}


def _one_window(store: EpisodeStore, start: int, horizon: int) -> Window:
    return store.windows(np.array([start]), horizon)


MODELS = {
    "cvae": lambda: ForwardModel(1, 1, latent_dim=2, hidden=16, layers=2, dropout=0.0),
    "deterministic": lambda: ForwardModel(1, 1, latent_dim=0, hidden=16, layers=2, dropout=0.0),
    "ensemble": lambda: EnsembleModel(1, 1, members=3, hidden=16, layers=2),
    "learned cost": lambda: LearnedCost(1, 1, hidden=16, layers=2),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_masked_window_scores_only_its_real_steps(kind: str) -> None:
    """A window that terminates after 2 of its 4 steps: what is past the termination changes
    nothing, its loss is per real step (that of its 2-step window), and a mask shifted by one
    step changes it."""
    store = _store()
    torch.manual_seed(0)
    module = MODELS[kind]()
    if isinstance(module, LearnedCost):
        module.set_normalization(store.stats(), CostStats.of(store))
    else:
        module.set_normalization(store.stats())
    module.eval()

    def loss(window: Window, posterior_only: bool = False) -> float:
        generator = torch.Generator().manual_seed(0)
        if posterior_only:  # the CVAE's per-step draws, where a short window draws the same
            nll, kl, _ = module._posterior_terms(window.obs, window.action, generator,
                                                 window.step_mask())  # fmt: skip
            return (nll + kl).item()
        return module.loss(window, generator=generator, score_all=True).loss.item()

    padded, short = _one_window(store, 1, 4), _one_window(store, 1, 2)
    assert padded.mask[:, 0].tolist() == [True, True, False, False]
    garbage = Window(
        torch.cat([padded.obs[:3], torch.full_like(padded.obs[3:], 1e3)]),
        torch.cat([padded.action[:2], torch.full_like(padded.action[2:], -1.0)]),
        torch.cat([padded.reward[:2], torch.full_like(padded.reward[2:], 50.0)]),
        torch.cat([padded.terminated[:2], torch.ones_like(padded.terminated[2:])]),
        mask=padded.mask,
    )
    assert loss(garbage) == pytest.approx(loss(padded), rel=1e-6)
    per_step = kind == "cvae"  # its energy score draws all steps' z at once
    assert loss(padded, per_step) == pytest.approx(loss(short, per_step), rel=1e-5)
    shifted = Window(padded.obs, padded.action, padded.reward, padded.terminated,
                     mask=torch.tensor([[True], [True], [True], [False]]))  # fmt: skip
    assert loss(shifted) != pytest.approx(loss(padded), rel=1e-3)


def test_a_model_is_fit_on_episodes_shorter_than_its_horizon_when_they_terminate() -> None:
    """Every episode terminates within 3 steps and the training horizon is 5: without terminal
    windows there is nothing to train on; with them the model learns s' = s + 2a."""
    rng = np.random.default_rng(0)
    store = EpisodeStore(1, 1)
    for _ in range(300):
        n = int(rng.integers(1, 4))
        action = rng.uniform(-1, 1, (n, 1))
        obs = rng.uniform(-1, 1) + np.r_[0.0, np.cumsum(2 * action[:-1, 0])][:, None]
        done = np.r_[np.zeros(n - 1, bool), [True]]
        store.add_episode(obs, action, np.zeros(n), obs + 2 * action, done, np.zeros(n, bool))
    assert len(store.window_starts(5)) == 0 and len(store.window_starts(5, terminal=True)) > 0
    torch.manual_seed(0)
    model = ForwardModel(1, 1, latent_dim=0, hidden=32, layers=2, dropout=0.0)
    model.set_normalization(store.stats())
    schedule = FitSchedule(horizon=5, batch_size=64, max_steps=400, eval_every=100, patience=10)
    fit_world_model(ModelTrainer(model, lr=3e-3, seed=0), store, schedule, seed=0)
    s, a = torch.linspace(-1, 1, 9)[:, None], torch.linspace(1, -1, 9)[:, None]
    with torch.no_grad():
        predicted = model.eval().step(s, a)
    assert torch.allclose(predicted, s + 2 * a, atol=0.1)
