"""Shared cases of the EpisodeStore tests: stores whose obs encode (episode, step), zeros."""

import numpy as np

from worldmodel.data.store import EpisodeStore


def make_store(lengths: list[int], obs_dim: int = 3, act_dim: int = 2) -> EpisodeStore:
    """Episodes whose obs encode (episode, step) so a window's provenance can be read back."""
    store = EpisodeStore(obs_dim, act_dim)
    for e, n in enumerate(lengths):
        steps = np.arange(n, dtype=np.float32)
        obs = np.stack([np.full(n, e), steps, np.zeros(n)], 1).astype(np.float32)
        next_obs = obs.copy()
        next_obs[:, 1] += 1
        store.add_episode(
            obs, np.ones((n, act_dim)), steps, next_obs, np.r_[np.zeros(n - 1), 1], np.zeros(n)
        )
    return store


def _episode(n: int):
    return (
        np.zeros((n, 3)),
        np.zeros((n, 2)),
        np.zeros(n),
        np.zeros((n, 3)),
        np.zeros(n),
        np.zeros(n),
    )
