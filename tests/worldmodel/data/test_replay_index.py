"""Replay sampling: the window index is built once per version of the data, so a batch costs
the same however much data there is, and every change of the data rebuilds it."""

import numpy as np
import pytest

from worldmodel.data.store import EpisodeStore


def _add(store: EpisodeStore, n: int, first: float, terminated: bool = False) -> None:
    obs = first + np.arange(n, dtype=np.float32)[:, None]
    done = np.zeros(n, bool)
    done[-1] = terminated
    store.add_episode(obs, np.zeros((n, 1)), np.zeros(n), obs + 1, done, np.zeros(n, bool))


def test_samples_reuse_one_index_until_the_data_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    store, rng = EpisodeStore(1, 1), np.random.default_rng(0)
    _add(store, 50, 0.0)
    builds, starts = [], EpisodeStore._starts

    def counted(self: EpisodeStore, *args: object) -> np.ndarray:
        builds.append(args)
        return starts(self, *args)

    monkeypatch.setattr(EpisodeStore, "_starts", counted)
    for _ in range(20):
        store.sample(8, 5, rng, terminal=True)
    assert len(builds) == 1
    _add(store, 30, 1000.0)  # a new episode: a new index, which samples it
    seen = np.concatenate([store.sample(64, 5, rng, terminal=True).obs[0, :, 0] for _ in range(5)])
    assert len(builds) == 2 and (seen >= 1000).any()
    assert not store.window_starts(5, terminal=True).flags.writeable


def test_every_change_of_the_data_rebuilds_the_index() -> None:
    store = EpisodeStore(1, 1, capacity=60)
    _add(store, 40, 0.0)
    assert len(store.window_starts(10)) == 31
    _add(store, 10, 100.0, terminated=True)  # ends in a termination: windows up to it
    assert len(store.window_starts(10)) == 31 + 1
    assert len(store.window_starts(10, terminal=True)) == 31 + 10
    _add(store, 30, 200.0)  # over capacity: the first episode is dropped
    assert len(store) == 40 and len(store.window_starts(10)) == 1 + 21
    store.drop_newer(store.next_episode - 1)
    assert len(store.window_starts(10)) == 1 and len(store.window_starts(10, True)) == 10
