"""What a fit of `ModelTrainer` is told (`FitSchedule`), what it did (`FitResult`) and where it
stands at a validation (`FitState`, what an exact resume continues from)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class FitSchedule:
    """How long and on what a fit trains."""

    horizon: int = 10  #: steps unrolled on the model's own predictions in the multi-step loss
    batch_size: int = 256  #: windows per gradient step
    max_steps: int = 4000  #: gradient steps at most
    eval_every: int = 200  #: gradient steps between validations (and checkpoints)
    patience: int = 4  #: validations without improvement before the fit stops
    val_fraction: float = 0.1  #: share of episodes held out for validation
    val_windows: int = 1024  #: validation windows, evenly spaced over the held-out episodes
    #: the learning rate at `max_steps` as a fraction of the trainer's; from step 0 it falls
    #: along a half cosine (1.0: constant)
    lr_final: float = 1.0
    #: the fit validates, keeps and ends on an exponential moving average of its weights, each
    #: update moving the average 1 - ema_decay of the way to the new weights (0: the weights)
    ema_decay: float = 0.99

    def __post_init__(self) -> None:
        sizes = (self.horizon, self.batch_size, self.max_steps, self.eval_every, self.patience)
        if min(*sizes, self.val_windows) <= 0:
            raise ValueError("horizon, batch_size, max_steps, eval_every, patience must be > 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.lr_final <= 1.0:
            raise ValueError(f"lr_final must be in [0, 1], got {self.lr_final}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def lr_factor(self, step: int) -> float:
        """The learning rate of gradient step `step` (0-based) over the trainer's.

        A decaying rate lets the fit settle: the energy score's gradient keeps its size as the
        error shrinks (it is a norm's), so at a constant rate the weights hover about the
        optimum, and multi-step errors compound what one step leaves.
        """
        progress = min(step / self.max_steps, 1.0)
        return self.lr_final + (1.0 - self.lr_final) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class FitResult:
    """What one call of `ModelTrainer.fit` did."""

    steps: int  #: gradient steps of the fit (those before a resume included)
    best_val_loss: float  #: validation loss of the weights kept
    seconds: float  #: wall time of the fit (that before a resume included)
    stopped_early: bool  #: validation stopped improving before `max_steps`


@dataclass
class FitState:
    """A fit as of its last validation: with the trainer's weights, optimiser, RNGs and counters
    (saved beside it by the caller), what `fit(resume=...)` continues from after a crash."""

    steps: int  #: gradient steps of this fit so far
    best_val_loss: float  #: validation loss of `best_weights`
    bad_evals: int  #: validations in a row without improvement
    best_weights: dict[str, Tensor]  #: a copy of the best weights so far
    seconds: float  #: wall time of this fit so far
    #: the moving average of the parameters since the fit's first update (empty before it, or
    #: where the schedule's `ema_decay` is 0)
    average: dict[str, Tensor] = dataclasses.field(default_factory=dict)
