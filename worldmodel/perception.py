"""Perception: observation -> state. For vector observations the state is the observation itself,
checked for shape and finiteness and moved to the model's device."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from worldmodel.errors import DataError


class Perception:
    """Turns an env observation [S] into a float tensor [S] on `device`."""

    def __init__(self, obs_dim: int, device: torch.device | str = "cpu") -> None:
        self.obs_dim, self.device = obs_dim, torch.device(device)

    def __call__(self, obs: np.ndarray | Tensor) -> Tensor:
        state = torch.as_tensor(np.asarray(obs, np.float32) if not isinstance(obs, Tensor) else obs)
        if state.shape != (self.obs_dim,):
            raise DataError(
                f"observation has shape {tuple(state.shape)} but the model expects "
                f"({self.obs_dim},); is this the env the model was trained on?"
            )
        if not torch.isfinite(state).all():
            raise DataError("observation contains NaN or inf; check the env or its wrappers")
        return state.to(self.device, torch.float32)
