"""The guarded gradient step every learner takes: a non-finite loss or gradient changes nothing."""

from __future__ import annotations

import torch
from torch import Tensor


def guarded_step(
    loss: Tensor, params: list[Tensor], optimizer: torch.optim.Optimizer, grad_clip: float
) -> Tensor | None:
    """Backpropagate `loss` into `params` only, clip their norm, step `optimizer`.

    Returns the gradient norm before clipping, or None where the loss or the gradient was NaN or
    inf: the step is skipped, with the weights and the optimiser's moments untouched (one bad
    batch must not poison Adam's state). `backward(inputs=params)` leaves every other tensor's
    gradient alone, so a policy's update does not touch the model it imagines through.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward(inputs=params)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    return grad_norm
