"""Run a policy in a real gymnasium env and record the episodes into an `EpisodeStore`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from worldmodel.data.store import EpisodeStore
from worldmodel.errors import DataError

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EpisodeResult:
    """Summary of one real episode."""

    episode_return: float  #: sum of env rewards
    length: int  #: steps taken
    terminated: bool  #: ended by the task (not by the time limit)


def run_episode(
    env: gym.Env,
    policy: Policy,
    seed: int | None = None,
    store: EpisodeStore | None = None,
    max_steps: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> EpisodeResult:
    """One episode of `policy` (obs [S] -> action [A]); appended to `store` when given.

    `max_steps` cuts the episode short (recorded as truncated); `on_step(t)` runs after each step.
    """
    obs, _ = env.reset(seed=seed)
    columns: dict[str, list] = {
        k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")
    }
    terminated = truncated = False
    while not (terminated or truncated):
        action = np.asarray(policy(obs), dtype=np.float32)
        if action.shape != env.action_space.shape or not np.isfinite(action).all():
            raise DataError(
                f"policy returned action of shape {action.shape} (finite: "
                f"{bool(np.isfinite(action).all())}); expected finite {env.action_space.shape}"
            )
        next_obs, reward, terminated, truncated, _ = env.step(action)
        if max_steps is not None and len(columns["reward"]) + 1 >= max_steps:
            truncated = True
        for key, value in zip(
            columns, (obs, action, reward, next_obs, terminated, truncated), strict=True
        ):
            columns[key].append(value)
        obs = next_obs
        if on_step is not None:
            on_step(len(columns["reward"]))
    if store is not None:
        store.add_episode(**{k: np.asarray(v) for k, v in columns.items()})
    return EpisodeResult(
        episode_return=float(np.sum(columns["reward"])),
        length=len(columns["reward"]),
        terminated=bool(terminated),
    )


def random_policy(env: gym.Env, seed: int) -> Policy:
    """Uniform actions from the env's action space, seeded."""
    env.action_space.seed(seed)
    return lambda _obs: env.action_space.sample()


def collect(
    env: gym.Env,
    policy: Policy,
    steps: int,
    store: EpisodeStore,
    seed: int,
    on_step: Callable[[int], None] | None = None,
) -> list[EpisodeResult]:
    """Whole episodes until at least `steps` steps; the last is cut to end exactly at `steps`."""
    if steps <= 0:
        raise DataError(f"steps must be positive, got {steps}")
    results: list[EpisodeResult] = []
    done = 0
    while done < steps:
        result = run_episode(
            env,
            policy,
            seed=seed + len(results),
            store=store,
            max_steps=steps - done,
            on_step=None if on_step is None else (lambda t, base=done: on_step(base + t)),
        )
        results.append(result)
        done += result.length
    return results
