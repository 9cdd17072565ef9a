"""Training episodes of `wm run` and what they log: the actor's decisions against what happened."""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from agents.app.media.inspection import log_plan_vs_real
from agents.app.media.logger import Logger
from worldmodel.data.rollout import EpisodeResult, run_episode
from worldmodel.data.store import EpisodeStore
from worldmodel.types import Actor


@dataclass
class EpisodeTrace:
    """Per-step planner records of one episode, to compare predictions with what happened."""

    planned: list[float] = field(default_factory=list)  #: predicted cost of each whole plan
    planned_step: list[float] = field(default_factory=list)  #: predicted cost of each first step
    seconds: list[float] = field(default_factory=list)  #: wall time of each decision
    fallbacks: int = 0  #: decisions where planning failed and the safe action was used

    def record(self, agent: Actor) -> None:
        if agent.last is None:
            return
        self.planned.append(agent.last.planned_cost)
        self.planned_step.append(agent.last.planned_step_cost)
        self.seconds.append(agent.last.seconds)
        self.fallbacks += agent.last.fallback

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


def run_episode_traced(
    env: gym.Env, agent: Actor, store: EpisodeStore, seed: int, max_steps: int
) -> tuple[EpisodeResult, EpisodeTrace]:
    """One training episode, with the actor's decisions recorded."""
    agent.reset()
    trace = EpisodeTrace()

    def act(obs: np.ndarray) -> np.ndarray:
        action = agent.act(obs)
        trace.record(agent)
        return action

    return run_episode(env, act, seed=seed, store=store, max_steps=max_steps), trace


def log_episode(
    logger: Logger,
    result: EpisodeResult,
    trace: EpisodeTrace,
    store: EpisodeStore,
    agent: Actor,
    steps: int,
) -> None:
    metrics = {
        "charts/episodic_return": result.episode_return,
        "charts/episodic_length": float(result.length),
    }
    if trace.planned_any:
        realised_costs = -store.data["reward"][-result.length :]
        planned, realised = planned_vs_realised(trace.planned, realised_costs, agent.horizon)
        metrics |= {
            "charts/planner_ms_per_action": 1000 * float(np.mean(trace.seconds)),
            "charts/planned_cost": planned,
            "charts/realised_cost": realised,
            "charts/planner_fallbacks": float(trace.fallbacks),
        }
        log_plan_vs_real(logger, np.array(trace.planned_step), realised_costs, steps)
    logger.scalars(metrics, steps)
