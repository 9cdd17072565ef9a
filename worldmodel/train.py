"""Training of the forward model: multi-step loss, Adam, validation early stopping."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from worldmodel.data import EpisodeStore, Window
from worldmodel.errors import TrainingDivergedError
from worldmodel.forward import ForwardModel

Metrics = dict[str, float]
MetricsSink = Callable[[Metrics, int], None]


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


class ModelTrainer:
    """Owns the optimiser and RNGs of one forward model; `fit` may be called again to warm-start.

    A non-finite loss or gradient skips the update (weights unchanged) and is counted
    (`skipped_updates`, logged as `charts/skipped_updates`). After `max_consecutive_skips` skipped
    updates in a row `fit` restores the best weights it saw and raises `TrainingDivergedError`.
    """

    def __init__(
        self,
        model: ForwardModel,
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
        self.model, self.grad_clip = model, grad_clip
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.total_steps = 0
        self.skipped_updates = 0
        self.consecutive_skips = 0

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def update(self, window: Window) -> Metrics:
        """One gradient step on a batch of windows ([H+1, B, S] states)."""
        self.model.train()
        terms = self.model.loss(window.to(self.model.device), generator=self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if not (torch.isfinite(terms.loss) and torch.isfinite(grad_norm)):
            self.skipped_updates += 1
            self.consecutive_skips += 1
            self.optimizer.zero_grad(set_to_none=True)
            return {"skipped_updates": float(self.skipped_updates)}
        self.optimizer.step()
        self.total_steps += 1
        self.consecutive_skips = 0
        return {
            "loss": terms.loss.item(),
            "reconstruction": terms.reconstruction.item(),
            "kl": terms.kl.item(),
            "grad_norm": grad_norm.item(),
        }

    @torch.no_grad()
    def validate(self, windows: Window) -> Metrics:
        """Loss on fixed windows with dropout off and a fixed latent seed, so evals compare."""
        self.model.eval()
        generator = torch.Generator(device=self.model.device).manual_seed(0)
        terms = self.model.loss(windows.to(self.model.device), generator=generator)
        return {"loss": terms.loss.item(), "reconstruction": terms.reconstruction.item()}

    def fit(
        self,
        train: EpisodeStore,
        val: EpisodeStore,
        *,
        horizon: int,
        batch_size: int,
        max_steps: int,
        eval_every: int,
        patience: int,
        val_windows: int = 1024,
        log: MetricsSink | None = None,
        progress: bool = True,
        resume: FitState | None = None,
        on_checkpoint: Callable[[FitState], None] | None = None,
    ) -> FitResult:
        """Train until validation loss stops improving for `patience` evaluations.

        The best weights seen are restored at the end; `log(metrics, step)` receives train
        metrics every `eval_every` steps and validation metrics at each evaluation. Raises
        `TrainingDivergedError`, with the best weights restored, once `max_consecutive_skips`
        updates in a row were skipped for a non-finite loss or gradient.

        `on_checkpoint(state)` runs after each validation; a trainer whose weights, optimiser,
        RNGs and counters are restored to that moment continues the fit exactly with
        `resume=state` (the same data and arguments).
        """
        if min(horizon, batch_size, max_steps, eval_every, patience, val_windows) <= 0:
            raise ValueError("horizon, batch_size, max_steps, eval_every, patience must be > 0")
        # A store with one episode has no held-out episode: validate on its own windows.
        held_out = val if len(val.window_starts(horizon)) else train
        val_set = held_out.spaced_windows(horizon, val_windows)
        if resume is None:
            weights = copy.deepcopy(self.model.state_dict())
            state = FitState(0, self.validate(val_set)["loss"], 0, weights, 0.0)
            self.consecutive_skips = 0
        else:
            state = dataclasses.replace(resume)
        start = time.perf_counter() - state.seconds
        last_tick, last_steps = time.perf_counter(), state.steps
        bar = tqdm(
            total=max_steps,
            initial=state.steps,
            desc="train model",
            disable=not progress,
            leave=False,
        )
        while state.steps < max_steps and state.bad_evals < patience:
            metrics = self.update(train.sample(batch_size, horizon, self.rng))
            state.steps += 1
            bar.update(1)
            if self.consecutive_skips >= self.max_consecutive_skips:
                bar.close()
                self.model.load_state_dict(state.best_weights)
                if log is not None:
                    log({"charts/skipped_updates": float(self.skipped_updates)}, self.total_steps)
                raise TrainingDivergedError(
                    f"training diverged: {self.consecutive_skips} updates in a row had a NaN or "
                    f"inf loss or gradient ({self.skipped_updates} skipped in all); the best "
                    f"weights (validation loss {state.best_val_loss:.4g}) were kept; lower "
                    "--train.lr or --train.grad_clip, or check the data"
                )
            if state.steps % eval_every and state.steps != max_steps:
                continue
            now = time.perf_counter()
            val_metrics = self.validate(val_set)
            best = state.best_val_loss
            if val_metrics["loss"] < best - 1e-6 * abs(best):
                state.best_val_loss, state.bad_evals = val_metrics["loss"], 0
                state.best_weights = copy.deepcopy(self.model.state_dict())
            else:
                state.bad_evals += 1
            rate = (state.steps - last_steps) * batch_size * horizon / max(now - last_tick, 1e-9)
            last_tick, last_steps = now, state.steps
            bar.set_postfix(val=f"{val_metrics['loss']:.4f}", best=f"{state.best_val_loss:.4f}")
            if log is not None:
                log(
                    {f"train/{k}": v for k, v in metrics.items()}
                    | {f"val/{k}": v for k, v in val_metrics.items()}
                    | {"charts/learning_rate": self.lr, "charts/samples_per_s": rate}
                    | {"charts/skipped_updates": float(self.skipped_updates)},
                    self.total_steps,
                )
            if on_checkpoint is not None:
                state.seconds = time.perf_counter() - start
                on_checkpoint(state)
        bar.close()
        self.model.load_state_dict(state.best_weights)
        best = state.best_val_loss
        return FitResult(
            steps=state.steps,
            best_val_loss=best if math.isfinite(best) else float("nan"),
            seconds=time.perf_counter() - start,
            stopped_early=state.steps < max_steps,
        )
