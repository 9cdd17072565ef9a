"""Training episodes of `wm run` and what they log: the actor's decisions against what happened."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from agents.app.media.inspection import log_plan_vs_real
from agents.app.media.logger import Logger
from worldmodel.data.rollout import EpisodeResult, run_episodes
from worldmodel.data.store import EpisodeStore
from worldmodel.types import Actor, Decision


@dataclass
class EpisodeTrace:
    """Per-step planner records of one episode, to compare predictions with what happened."""

    planned: list[float] = field(default_factory=list)  #: predicted cost of each whole plan
    planned_step: list[float] = field(default_factory=list)  #: predicted cost of each first step
    seconds: list[float] = field(default_factory=list)  #: wall time of each decision
    fallbacks: int = 0  #: decisions where planning failed and the safe action was used

    def record(self, decision: Decision) -> None:
        self.planned.append(decision.planned_cost)
        self.planned_step.append(decision.planned_step_cost)
        self.seconds.append(decision.seconds)
        self.fallbacks += decision.fallback

    @property
    def planned_any(self) -> bool:
        """Whether the actor planned (a policy's decisions carry no predicted cost)."""
        return bool(self.planned) and np.isfinite(self.planned).any()


def planned_vs_realised(
    planned: list[float], costs: np.ndarray, horizon: int
) -> tuple[float, float]:
    """Mean predicted plan cost and mean realised cost over the same `horizon` steps that followed.

    Only decisions with `horizon` real steps after them count; (nan, nan) if there are none.
    """
    n = len(costs) - horizon + 1
    if n <= 0:
        return float("nan"), float("nan")
    realised = np.convolve(costs, np.ones(horizon), mode="valid")[:n]
    return float(np.mean(planned[:n])), float(np.mean(realised))


def run_round_traced(
    vec: gym.vector.VectorEnv,
    agent: Actor,
    store: EpisodeStore,
    seeds: list[int],
    max_steps: int,
    on_step: Callable[[int], None] | None = None,
) -> list[tuple[EpisodeResult, EpisodeTrace]]:
    """Training episodes `seeds`, side by side in `vec` (one `act_batch` decision per step for
    the envs running), with each one's decisions recorded; at most `max_steps` steps in all;
    `on_step(steps)` after each step (`run_episodes`)."""
    agent.reset()
    traces: dict[int, EpisodeTrace] = {}

    def on_act(episodes: list[int]) -> None:
        for decision, episode in zip(agent.last_batch, episodes, strict=True):  # type: ignore[attr-defined]
            traces.setdefault(episode, EpisodeTrace()).record(decision)

    act, reset_env = agent.act_batch, agent.reset_envs  # type: ignore[attr-defined]
    ended = lambda e: reset_env([e])  # noqa: E731
    results = run_episodes(vec, act, seeds, store, max_steps, on_act, ended, on_step)
    return list(zip(results, (traces[e] for e in sorted(traces)), strict=True))


def log_episode(
    logger: Logger,
    result: EpisodeResult,
    trace: EpisodeTrace,
    rewards: np.ndarray,
    horizon: int,
    steps: int,
) -> None:
    """The episode's return and length, and where the actor planned, its predicted costs
    against the realised ones (`rewards` [T], the episode's)."""
    metrics = {
        "charts/episodic_return": result.episode_return,
        "charts/episodic_length": float(result.length),
    }
    if trace.planned_any:
        realised_costs = -rewards
        planned, realised = planned_vs_realised(trace.planned, realised_costs, horizon)
        metrics |= {
            "charts/planner_ms_per_action": 1000 * float(np.mean(trace.seconds)),
            "charts/planned_cost": planned,
            "charts/realised_cost": realised,
            "charts/planner_fallbacks": float(trace.fallbacks),
        }
        log_plan_vs_real(logger, np.array(trace.planned_step), realised_costs, steps)
    logger.scalars(metrics, steps)
