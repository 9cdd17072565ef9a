"""The fits of `wm train`: the world model's, then (with --cost learned) the learned cost's on
one-step windows. Each checkpoints at its validations; a run killed in either resumes there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from agents.app.media.inspection import cost_log
from agents.app.runs.train_state import (
    fitting_cost,
    restore_fit,
    restore_fitted_model,
    snapshot_cost_fit,
    snapshot_fit,
)
from agents.configurator.assemble import (
    build_trainer,
    cost_schedule,
    fit_schedule,
    intrinsic_cost,
    learns_cost,
    new_learned_cost,
    new_world_model,
)
from agents.configurator.config import Config
from envs import Task
from worldmodel.cost.intrinsic import IntrinsicCost
from worldmodel.cost.learned import CostStats
from worldmodel.data.store import EpisodeStore
from worldmodel.forward.fit import FitResult, FitState, MetricsSink, ModelTrainer, fit_world_model

Save = Callable[..., None]
"""`save(groups, **meta)`: the run's checkpoint, with extra tensor groups and meta."""
Restored = tuple[dict[str, dict[str, torch.Tensor]], dict]  #: checkpoint groups, meta['train']


@dataclass
class TrainFits:
    """The trainers of one `wm train` and where their fits stand."""

    config: Config
    task: Task
    trainer: ModelTrainer  #: the world model's
    cost_trainer: ModelTrainer | None  #: the learned cost's (None: the cost is exact)
    model_state: FitState | None = None  #: where a resumed model fit continues
    cost_state: FitState | None = None  #: where a resumed cost fit continues
    model_result: FitResult | None = None  #: the model's fit, once done

    @classmethod
    def build(
        cls, config: Config, task: Task, train_set: EpisodeStore, device: torch.device
    ) -> TrainFits:
        """New modules normalised by the training episodes, and their trainers."""
        stats = train_set.stats()
        model = new_world_model(config.model, task, stats, device, config.seed)
        cost_trainer = None
        if learns_cost(config):
            costs = CostStats.of(train_set)
            learned = new_learned_cost(config.cost_model, task, stats, costs, device, config.seed)
            cost_trainer = build_trainer(config.train, learned, config.seed)
        return cls(config, task, build_trainer(config.train, model, config.seed), cost_trainer)

    @property
    def costs(self) -> IntrinsicCost:
        learned = None if self.cost_trainer is None else self.cost_trainer.model
        return intrinsic_cost(self.config, self.task, learned)  # type: ignore[arg-type]

    def modules(self) -> dict[str, torch.nn.Module]:
        """What a checkpoint holds beside the world model: the learned cost, if any."""
        return {} if self.cost_trainer is None else {"cost": self.cost_trainer.model}  # type: ignore[dict-item]

    def restore(self, restored: Restored, run_dir: Path) -> int:
        """Continue from a checkpoint's groups and meta['train']; returns the model's steps."""
        groups, state = restored
        if fitting_cost(state) and self.cost_trainer is not None:
            self.model_result = restore_fitted_model(self.trainer, groups, state, run_dir)
            self.cost_state = restore_fit(self.cost_trainer, groups, state["cost"], run_dir, "cost")
            return self.model_result.steps
        self.model_state = restore_fit(self.trainer, groups, state, run_dir)
        return self.model_state.steps

    def fit(self, store: EpisodeStore, log: MetricsSink, save: Save) -> FitResult:
        """The model's fit (unless done), then the cost's, each saving at its validations;
        returns the model's result."""
        config, trainer = self.config, self.trainer

        def checkpoint(state: FitState) -> None:
            save(*snapshot_fit(trainer, state))

        if self.model_result is None:
            self.model_result = fit_world_model(
                trainer, store, fit_schedule(config.train), seed=config.seed, log=log,
                progress=config.progress, resume=self.model_state, on_checkpoint=checkpoint,
            )  # fmt: skip
        model_result, cost_trainer = self.model_result, self.cost_trainer
        if cost_trainer is not None:

            def cost_checkpoint(state: FitState) -> None:
                save(*snapshot_cost_fit(trainer, model_result, cost_trainer, state))

            result = fit_world_model(
                cost_trainer, store, cost_schedule(config.train), seed=config.seed,
                log=cost_log(log), progress=config.progress, resume=self.cost_state,
                on_checkpoint=cost_checkpoint,
            )  # fmt: skip
            print(f"fit the learned cost in {result.steps} steps", flush=True)
        return model_result
