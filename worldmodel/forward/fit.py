"""Training of the forward model (and of any module with a loss on windows, such as the learned
cost): Adam, skipped non-finite updates, validation early stopping, exact resume."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import NoReturn, Protocol

import numpy as np
import torch
from torch import Generator, Tensor, nn
from tqdm.auto import tqdm

from worldmodel.data.store import EpisodeStore, Window
from worldmodel.errors import TrainingDivergedError
from worldmodel.forward.schedule import FitResult, FitSchedule, FitState
from worldmodel.optim import guarded_step

Metrics = dict[str, float]
MetricsSink = Callable[[Metrics, int], None]


class Terms(Protocol):
    """A loss and its named parts, as a trainable module's `loss` returns them."""

    loss: Tensor

    def metrics(self) -> Metrics: ...


class Trainable(Protocol):
    """What `ModelTrainer` fits: an `nn.Module` on a device with a loss on batches of windows
    (`ForwardModel`, `EnsembleModel`, `LearnedCost`); `score_all` asks for the validation score
    (every window scored every way)."""

    @property
    def device(self) -> torch.device: ...

    def loss(
        self, window: Window, generator: Generator | None = None, score_all: bool = False
    ) -> Terms: ...

    # The parts of nn.Module the trainer uses.
    def parameters(self) -> Iterator[nn.Parameter]: ...
    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]: ...
    def state_dict(self) -> dict[str, Tensor]: ...
    def load_state_dict(self, state_dict: dict[str, Tensor]) -> object: ...
    def train(self, mode: bool = True) -> object: ...
    def eval(self) -> object: ...


class ModelTrainer:
    """Owns the optimiser and RNGs of one forward model (or other `Trainable` module, such as a
    learned cost); `fit` may be called again to warm-start.

    A non-finite loss or gradient skips the update (weights unchanged) and is counted
    (`skipped_updates`, logged as `charts/skipped_updates`). After `max_consecutive_skips` skipped
    updates in a row `fit` restores the best weights it saw and raises `TrainingDivergedError`.
    """

    def __init__(
        self,
        model: Trainable,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        grad_clip: float = 10.0,
        seed: int = 0,
        max_consecutive_skips: int = 50,
    ) -> None:
        if lr <= 0 or grad_clip <= 0 or weight_decay < 0:
            raise ValueError("lr and grad_clip must be positive and weight_decay non-negative")
        if max_consecutive_skips <= 0:
            raise ValueError(f"max_consecutive_skips must be positive, got {max_consecutive_skips}")
        self.max_consecutive_skips = max_consecutive_skips
        self.model, self.grad_clip, self.base_lr = model, grad_clip, lr
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.total_steps = 0
        self.skipped_updates = 0
        self.consecutive_skips = 0

    @property
    def lr(self) -> float:
        """The rate of the next update: `base_lr` outside a fit, its schedule's inside."""
        return self.optimizer.param_groups[0]["lr"]

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def update(self, window: Window) -> Metrics:
        """One gradient step on a batch of windows ([H+1, B, S] states)."""
        self.model.train()
        terms = self.model.loss(window.to(self.model.device), generator=self.generator)
        params = list(self.model.parameters())
        grad_norm = guarded_step(terms.loss, params, self.optimizer, self.grad_clip)
        if grad_norm is None:
            self.skipped_updates += 1
            self.consecutive_skips += 1
            return {"skipped_updates": float(self.skipped_updates)}
        self.total_steps += 1
        self.consecutive_skips = 0
        return {"loss": terms.loss.item(), **terms.metrics(), "grad_norm": grad_norm.item()}

    @torch.no_grad()
    def validate(self, windows: Window) -> Metrics:
        """Loss on fixed windows with dropout off and a fixed latent seed, so evals compare; every
        window is scored with z from the posterior and from the prior (`score_all`), so early
        stopping also watches the samples a planner will draw. For the CVAE `val/loss` is the sum
        of both scores, so it is on another scale than `train/loss` (their mixture by latent
        dropout); `energy` is per step in delta-normalised units over sqrt(S)."""
        self.model.eval()
        generator = torch.Generator(device=self.model.device).manual_seed(0)
        terms = self.model.loss(windows.to(self.model.device), generator=generator, score_all=True)
        return {"loss": terms.loss.item(), **terms.metrics()}

    def fit(
        self,
        train: EpisodeStore,
        val: EpisodeStore,
        schedule: FitSchedule,
        *,
        log: MetricsSink | None = None,
        progress: bool = False,
        resume: FitState | None = None,
        on_checkpoint: Callable[[FitState], None] | None = None,
    ) -> FitResult:
        """Train until validation loss stops improving for `schedule.patience` evaluations; the
        best weights seen are restored at the end (also when `TrainingDivergedError` is raised).
        The learning rate follows `schedule.lr_factor` of the fit's step and is `base_lr` again
        afterwards (for `update` calls between fits).

        `log(metrics, step)` receives train and validation metrics at each evaluation.

        `on_checkpoint(state)` runs after each validation; a trainer whose weights, optimiser,
        RNGs and counters are restored to that moment continues the fit exactly with
        `resume=state` (the same data and arguments).
        """
        val_set = validation_windows(train, val, schedule.horizon, schedule.val_windows)
        state = self._start(val_set) if resume is None else _copied(resume)
        clock = _Clock(state, schedule)
        bar = tqdm(total=schedule.max_steps, initial=state.steps, disable=not progress, **_BAR)
        try:
            while state.steps < schedule.max_steps and state.bad_evals < schedule.patience:
                window = train.sample(
                    schedule.batch_size, schedule.horizon, self.rng, terminal=True
                )
                self._set_lr(self.base_lr * schedule.lr_factor(state.steps))
                metrics = self.update(window)
                self._average(state, schedule.ema_decay)
                state.steps += 1
                bar.update(1)
                if self.diverging:
                    self._diverged(state, log)
                if state.steps % schedule.eval_every == 0 or state.steps == schedule.max_steps:
                    val_metrics = self._validate_and_keep_best(state, val_set)
                    best = state.best_val_loss
                    bar.set_postfix(val=f"{val_metrics['loss']:.4f}", best=f"{best:.4f}")
                    self._report(state, clock, metrics, val_metrics, log, on_checkpoint)
        finally:
            bar.close()
            self._set_lr(self.base_lr)
        self.model.load_state_dict(state.best_weights)
        best = state.best_val_loss
        return FitResult(
            steps=state.steps,
            best_val_loss=best if math.isfinite(best) else float("nan"),
            seconds=clock.seconds(),
            stopped_early=state.steps < schedule.max_steps,
        )

    def _start(self, val_set: Window) -> FitState:
        """The state of a new fit: the current weights are the best so far."""
        self.consecutive_skips = 0
        weights = copy.deepcopy(self.model.state_dict())
        return FitState(0, self.validate(val_set)["loss"], 0, weights, 0.0)

    @torch.no_grad()
    def _average(self, state: FitState, decay: float) -> None:
        """Move the fit's weight average toward the weights after update `state.steps` (0-based)
        of the fit (`FitSchedule.ema_decay`). The decay warms up as (1 + t) / (10 + t), so that
        a short fit (a loop's refit of 100 steps) averages its last tenth or so, not its start."""
        if decay == 0.0:
            return
        if not state.average:
            state.average = {n: p.detach().clone() for n, p in self.model.named_parameters()}
            return
        decay = min(decay, (1 + state.steps) / (10 + state.steps))
        for name, param in self.model.named_parameters():
            state.average[name].lerp_(param.detach(), 1.0 - decay)

    def _validate_and_keep_best(self, state: FitState, val_set: Window) -> Metrics:
        """Validate (the weight average where there is one); keep a copy of those weights if
        they beat the best, else count a bad eval. Training continues from its own weights."""
        with _swapped_in(self.model, state.average):
            val_metrics = self.validate(val_set)
            best = state.best_val_loss
            if val_metrics["loss"] < best - 1e-6 * abs(best):
                state.best_val_loss, state.bad_evals = val_metrics["loss"], 0
                state.best_weights = copy.deepcopy(self.model.state_dict())
            else:
                state.bad_evals += 1
        return val_metrics

    def _report(
        self,
        state: FitState,
        clock: _Clock,
        train: Metrics,
        val: Metrics,
        log: MetricsSink | None,
        on_checkpoint: Callable[[FitState], None] | None,
    ) -> None:
        """After a validation: log the metrics and hand the state to the checkpoint callback."""
        if log is not None:
            log(self._eval_metrics(train, val, clock.rate(state)), self.total_steps)
        if on_checkpoint is not None:
            state.seconds = clock.seconds()
            on_checkpoint(state)

    def _eval_metrics(self, train: Metrics, val: Metrics, samples_per_s: float) -> Metrics:
        return (
            {f"train/{k}": v for k, v in train.items()}
            | {f"val/{k}": v for k, v in val.items()}
            | {"charts/learning_rate": self.lr, "charts/samples_per_s": samples_per_s}
            | {"charts/skipped_updates": float(self.skipped_updates)}
        )

    def _diverged(self, state: FitState, log: MetricsSink | None) -> NoReturn:
        """Restore the best weights and raise: too many updates in a row were non-finite."""
        self.model.load_state_dict(state.best_weights)
        if log is not None:
            log({"charts/skipped_updates": float(self.skipped_updates)}, self.total_steps)
        kept = f"the best weights (validation loss {state.best_val_loss:.4g}) were kept"
        raise self.diverged_error(kept)

    @property
    def diverging(self) -> bool:
        """Whether the last `max_consecutive_skips` updates were all skipped."""
        return self.consecutive_skips >= self.max_consecutive_skips

    def diverged_error(self, kept: str) -> TrainingDivergedError:
        """The one-line error of a diverged training; `kept` says which weights remain."""
        return TrainingDivergedError(
            f"training diverged: {self.consecutive_skips} updates in a row had a NaN or "
            f"inf loss or gradient ({self.skipped_updates} skipped in all); {kept}; lower "
            "--train.lr or --train.grad-clip, or check the data"
        )


_BAR = {"desc": "train model", "leave": False}


class _Clock:
    """Wall time of a fit (a resumed one's earlier time included) and its sample rate."""

    def __init__(self, state: FitState, schedule: FitSchedule) -> None:
        self.start = time.perf_counter() - state.seconds
        self.last_tick, self.last_steps = time.perf_counter(), state.steps
        self.samples_per_step = schedule.batch_size * schedule.horizon

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def rate(self, state: FitState) -> float:
        """Training samples (window steps) per second since the previous call."""
        now = time.perf_counter()
        rate = (
            (state.steps - self.last_steps)
            * self.samples_per_step
            / max(now - self.last_tick, 1e-9)
        )
        self.last_tick, self.last_steps = now, state.steps
        return rate


def split_episodes(
    store: EpisodeStore, val_fraction: float, seed: int
) -> tuple[EpisodeStore, EpisodeStore]:
    """Train and validation stores with disjoint episodes; one episode is both."""
    if store.num_episodes <= 1:
        return store, store
    return store.split(val_fraction, seed)


def validation_windows(train: EpisodeStore, val: EpisodeStore, horizon: int, count: int) -> Window:
    """Up to `count` evenly spaced windows of the held-out episodes, else (a store with one
    episode has none) of the training ones. Windows that end in a termination are validated on
    up to it (masked after)."""
    held_out = val if len(val.window_starts(horizon, terminal=True)) else train
    return held_out.spaced_windows(horizon, count, terminal=True)


def fit_world_model(
    trainer: ModelTrainer,
    store: EpisodeStore,
    schedule: FitSchedule | None = None,
    *,
    seed: int = 0,
    log: MetricsSink | None = None,
    progress: bool = False,
    resume: FitState | None = None,
    on_checkpoint: Callable[[FitState], None] | None = None,
) -> FitResult:
    """Fit `trainer`'s model to the episodes of `store`, validating on held-out episodes.

    The split is `split_episodes(store, schedule.val_fraction, seed)`, the same for the same
    store and seed; the model keeps its normalisation (set it once, before the first fit).
    """
    schedule = FitSchedule() if schedule is None else schedule
    train, val = split_episodes(store, schedule.val_fraction, seed)
    return trainer.fit(
        train, val, schedule, log=log, progress=progress, resume=resume, on_checkpoint=on_checkpoint
    )


def _copied(state: FitState) -> FitState:
    """A copy of a caller's state that the fit may update in place (the weight average's
    tensors are moved by each update) without changing the caller's."""
    average = {name: value.clone() for name, value in state.average.items()}
    return dataclasses.replace(state, average=average)


@contextlib.contextmanager
def _swapped_in(model: Trainable, weights: dict[str, Tensor]) -> Iterator[None]:
    """`model`'s parameters replaced by `weights` (by name) inside the block, restored after;
    nothing changes where `weights` is empty."""
    if not weights:
        yield
        return
    params = dict(model.named_parameters())
    own = {name: params[name].detach().clone() for name in weights}
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, value in own.items():
                params[name].copy_(value)
