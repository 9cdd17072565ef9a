"""The guarded gradient step every learner takes: a non-finite loss or gradient changes nothing;
and Adam's moments carried over to re-expressed weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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


@torch.no_grad()
def rescale_moments(optimizer: torch.optim.Optimizer, before: dict[nn.Parameter, Tensor]) -> None:
    """Adam's moments in the units of weights re-expressed as W' = k W (elementwise k, from
    `before`: each weight's values before; pass weights only, not biases, which move
    additively): the gradient of W' is that of W over k, so the first moment is divided by k and
    the second by k^2; where k is 0 (a zeroed column) both are 0. Else each step after a
    renormalisation would be scaled by k for as long as Adam remembers."""
    for param, old in before.items():
        state = optimizer.state.get(param)
        if not state or "exp_avg" not in state:
            continue
        k = torch.where(old != 0, param / torch.where(old != 0, old, 1.0), 1.0)
        live = k != 0
        safe = torch.where(live, k, 1.0)
        state["exp_avg"].copy_(torch.where(live, state["exp_avg"] / safe, 0.0))
        state["exp_avg_sq"].copy_(torch.where(live, state["exp_avg_sq"] / safe.square(), 0.0))
