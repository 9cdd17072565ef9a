"""Building blocks of the networks: MLPs, their functional form for hot loops, and context
managers that switch dropout or gradients for a while and put the modules back as they were."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import Generator, Tensor, nn

from worldmodel.data.store import Stats


def mlp(inp: int, hidden: int, out: int, layers: int, dropout: float) -> nn.Sequential:
    """`layers` hidden blocks Linear -> LayerNorm -> SiLU -> Dropout, then a linear head."""
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks += [nn.Linear(inp if i == 0 else hidden, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        if dropout > 0:
            blocks.append(nn.Dropout(dropout))
    blocks.append(nn.Linear(hidden if layers else inp, out))
    return nn.Sequential(*blocks)


def functional(
    blocks: nn.Sequential, masks: Sequence[Tensor] | None = None
) -> list[Callable[[Tensor], Tensor]]:
    """The blocks as plain functions, for the planner's hot loop.

    Calling `nn.Module`s costs a few microseconds of hook handling each, about a fifth of a
    planning decision; dropout in eval mode is the identity and is left out altogether.
    `masks` (one per dropout layer, in order, each broadcastable to its input and already scaled
    by 1 / (1 - p)) replace the dropout layers whatever their mode: the same masks at every call.
    """
    if masks is not None and len(masks) != sum(isinstance(b, nn.Dropout) for b in blocks):
        raise ValueError(f"{len(masks)} dropout masks for the blocks' dropout layers")
    remaining = iter(masks or ())
    layers: list[Callable[[Tensor], Tensor]] = []
    for block in blocks:
        if isinstance(block, nn.Linear):
            layers.append(partial(F.linear, weight=block.weight, bias=block.bias))
        elif isinstance(block, nn.LayerNorm):
            layers.append(
                partial(
                    F.layer_norm,
                    normalized_shape=block.normalized_shape,
                    weight=block.weight,
                    bias=block.bias,
                    eps=block.eps,
                )
            )
        elif isinstance(block, nn.SiLU):
            layers.append(F.silu)
        elif isinstance(block, nn.Dropout):
            if masks is not None:
                layers.append(partial(torch.mul, other=next(remaining)))
            elif block.training and block.p > 0:
                layers.append(partial(F.dropout, p=block.p, training=True))
        else:
            layers.append(block)
    return layers


@contextmanager
def _modes(modules: list[nn.Module], training: bool) -> Iterator[None]:
    """Set `training` on `modules` (not their children) and restore each one's mode after."""
    before = [m.training for m in modules]
    for m in modules:
        m.training = training
    try:
        yield
    finally:
        for m, mode in zip(modules, before, strict=True):
            m.training = mode


def mc_dropout(module: nn.Module) -> contextlib.AbstractContextManager[None]:
    """Switch on the dropout layers only (LayerNorm and the rest keep their mode)."""
    return _modes([m for m in module.modules() if isinstance(m, nn.Dropout)], True)


def eval_mode(model: object) -> contextlib.AbstractContextManager[None]:
    """Dropout off (the mean model) while imagining; every module's mode restored afterwards.

    The model is shared with its trainer, so modes are put back exactly as they were. A model
    that is not an `nn.Module` (a hand-written dynamics) is left alone.
    """
    return _modes(list(model.modules()) if isinstance(model, nn.Module) else [], False)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No gradients for the weights, so backpropagating to inputs (actions) skips their work."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def dropout_masks(blocks: nn.Sequential, rows: int) -> list[Tensor]:
    """One mask [rows, width] per dropout layer of `blocks`, scaled by 1 / (1 - p), for
    `functional(blocks, masks)`: row i keeps its sub-network for as long as the masks are used.
    Drawn from torch's global RNG, as `nn.Dropout` draws its masks."""
    masks, width = [], 0
    for block in blocks:
        if isinstance(block, nn.Linear):
            width, like = block.out_features, block.weight
        elif isinstance(block, nn.Dropout):
            keep = torch.empty(rows, width, device=like.device, dtype=like.dtype)
            masks.append(keep.bernoulli_(1.0 - block.p) / (1.0 - block.p))
    return masks


CONSTANT_STD = 1e-5
"""A std at most this (`EpisodeStore.stats` floors at 1e-6) marks an input that did not vary."""


@torch.no_grad()
def shift_input_normalization(
    weight: Tensor,
    bias: Tensor,
    cols: slice,
    old: tuple[Tensor, Tensor],
    new: tuple[Tensor, Tensor],
) -> None:
    """Re-express a linear layer for inputs normalised by `new` (mean, std) instead of `old`
    in the columns `cols`, in place, so that it computes the same function of the raw input.

    weight [..., out, in], bias [..., out] (views are fine). With x_n = (x - m) / s,
    W x_n + b = W' (x - m') / s' + b' for W' = W s' / s and b' = b + W (m' - m) / s.
    A column whose input was constant (std at the stats' floor) is zeroed instead: the net never
    saw it vary, and s' / s would blow its arbitrary weights up by as much as 1e6.
    """
    (old_mean, old_std), (new_mean, new_std) = old, new
    varied = old_std > CONSTANT_STD
    w = weight[..., cols]
    bias += w @ torch.where(varied, (new_mean - old_mean) / old_std, 0.0)
    w *= torch.where(varied, new_std / old_std, 0.0)


@torch.no_grad()
def renormalize_state_input(first: nn.Linear, mean: Tensor, std: Tensor, stats: Stats) -> None:
    """A net that normalises states by the buffers `mean`, `std` [S] and feeds them to its first
    layer `first` (states its first S inputs), moved to `stats` keeping its function: the layer
    re-expressed (`shift_input_normalization`), the buffers overwritten."""
    new = (stats.state_mean.to(mean), stats.state_std.to(std))
    shift_input_normalization(first.weight, first.bias, slice(0, len(mean)), (mean, std), new)
    mean.copy_(new[0])
    std.copy_(new[1])


@torch.no_grad()
def shift_output_normalization(
    weight: Tensor,
    bias: Tensor,
    rows: slice,
    old: tuple[Tensor, Tensor],
    new: tuple[Tensor, Tensor],
) -> None:
    """Re-express a linear head whose outputs `rows` are de-normalised as y = o s + m for `new`
    (m, s) instead of `old`, in place, keeping y (PopArt's rescaling, van Hasselt et al. 2016).

    weight [..., out, in], bias [..., out]."""
    (old_mean, old_std), (new_mean, new_std) = old, new
    bias[..., rows] = (bias[..., rows] * old_std + old_mean - new_mean) / new_std
    weight[..., rows, :] *= (old_std / new_std)[:, None]


class NormalizedModel(nn.Module):
    """What every forward model shares: normalisation buffers (they travel with the
    `state_dict`), its device, and z ~ N(0, I) of its `latent_dim`."""

    latent_dim: int

    def __init__(self, state_dim: int) -> None:
        super().__init__()
        for name in ("state_mean", "delta_mean"):
            self.register_buffer(name, torch.zeros(state_dim))
        for name in ("state_std", "delta_std"):
            self.register_buffer(name, torch.ones(state_dim))

    @property
    def device(self) -> torch.device:
        return self.state_mean.device

    def set_normalization(self, stats: Stats) -> None:
        """Copy data statistics into the buffers (before training; `renormalize` later)."""
        for name in ("state_mean", "state_std", "delta_mean", "delta_std"):
            getattr(self, name).copy_(getattr(stats, name))

    @torch.no_grad()
    def renormalize(self, stats: Stats) -> None:
        """Move to the statistics of more data, keeping the function the model computes (its
        weights re-expressed for the new units), so that training goes on from where it was
        with inputs and targets of order one again."""
        old = self.stats()
        new = Stats(*(getattr(stats, f).to(self.device) for f in Stats.__dataclass_fields__))
        self._keep_function(old, new)
        self.set_normalization(new)

    def stats(self) -> Stats:
        """A copy of the statistics in the buffers."""
        return Stats(self.state_mean.clone(), self.state_std.clone(),
                     self.delta_mean.clone(), self.delta_std.clone())  # fmt: skip

    def _keep_function(self, old: Stats, new: Stats) -> None:
        """Re-express the weights for `new` statistics instead of `old` (see `renormalize`)."""
        raise NotImplementedError

    def sample_prior(self, *shape: int, generator: Generator | None = None) -> Tensor:
        """z ~ N(0, I) of shape [*shape, latent_dim] on the model's device."""
        return torch.randn(
            *shape,
            self.latent_dim,
            generator=generator,
            device=self.device,  # pragma: no mutate
            dtype=self.state_mean.dtype,
        )
