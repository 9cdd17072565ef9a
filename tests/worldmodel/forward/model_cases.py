"""Shared cases of the ForwardModel tests: the sizes, a random window, a small CVAE, stats."""

import torch

from worldmodel.data.store import Stats, Window
from worldmodel.forward.model import ForwardModel

S, A = 3, 2


def window(horizon: int = 5, batch: int = 16, seed: int = 0) -> Window:
    g = torch.Generator().manual_seed(seed)
    return Window(
        obs=torch.randn(horizon + 1, batch, S, generator=g),
        action=torch.rand(horizon, batch, A, generator=g) * 2 - 1,
        reward=torch.zeros(horizon, batch),
        terminated=torch.zeros(horizon, batch, dtype=torch.bool),
    )


def _cvae(latent_dropout: float, mode: str = "prior") -> ForwardModel:
    torch.manual_seed(0)
    return ForwardModel(
        3, 2, latent_dim=4, hidden=16, layers=1, dropout=0.0,
        latent_dropout=latent_dropout, latent_dropout_mode=mode,
    )  # fmt: skip


def _stats(seed: int) -> Stats:
    g = torch.Generator().manual_seed(seed)
    return Stats(*(torch.rand(3, generator=g) + 0.5 for _ in range(4)))
