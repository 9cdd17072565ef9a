"""Run a policy in a real gymnasium env and record the episodes into an `EpisodeStore`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from worldmodel.data.store import EpisodeStore
from worldmodel.errors import DataError

Policy = Callable[[np.ndarray], np.ndarray]
BatchPolicy = Callable[[np.ndarray, list[int]], np.ndarray]
"""(obs [n, S] of the envs named, their env indices) -> actions [n, A]."""
COLUMNS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


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
    columns: dict[str, list] = {k: [] for k in COLUMNS}
    terminated = truncated = False
    while not (terminated or truncated):
        action = _checked(policy(obs), env.action_space.shape)
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
    return _result(columns)


def run_episodes(
    vec: gym.vector.VectorEnv,
    policy: BatchPolicy,
    seeds: list[int],
    store: EpisodeStore | None = None,
    max_steps: int | None = None,
    on_act: Callable[[list[int]], None] | None = None,
    on_end: Callable[[int], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[EpisodeResult]:
    """Episodes `seeds[i]`, up to `vec.num_envs` side by side, one `policy` call per step for
    the envs running; a finished env starts the next episode, or idles (not asked for actions,
    not recorded) once none is left. `vec` must not autoreset (`AutoresetMode.DISABLED`).

    Episode i is the one `run_episode` gives for `seeds[i]` with the same actions. `max_steps`
    bounds the steps of all episodes together: an episode that would pass it ends at its last
    step as truncated, and episodes cut before their first step are not run. The episodes run
    are returned and appended to `store` in the order of `seeds`. `on_act(episodes)` runs after
    each policy call (the episode of each row), `on_end(env)` when an env's episode ends,
    `on_step(steps)` after each step of the vector env (the steps taken in all so far).
    """
    n, budget = vec.num_envs, math.inf if max_steps is None else max_steps
    columns: list[dict[str, list]] = [{k: [] for k in COLUMNS} for _ in seeds]
    running = [i if i < len(seeds) else -1 for i in range(n)]  # each env's episode; -1: idle
    started, taken = min(n, len(seeds)), 0
    obs, _ = vec.reset(seed=[seeds[e] if e >= 0 else None for e in running])
    idle_action = _middle(vec.single_action_space)
    while max(running) >= 0:
        active = _within_budget(running, columns, budget - taken)
        if not active:
            break
        actions = np.tile(idle_action, (n, 1))
        actions[active] = _checked(policy(obs[active], active), (len(active), *idle_action.shape))
        if on_act is not None:
            on_act([running[i] for i in active])
        next_obs, reward, terminated, truncated, _ = vec.step(actions)
        taken += len(active)
        for i in active:
            row = (obs[i], actions[i], reward[i], next_obs[i], terminated[i], truncated[i])
            for key, value in zip(COLUMNS, row, strict=True):
                columns[running[i]][key].append(value)
        ended = terminated | truncated
        if on_step is not None:
            on_step(taken)
        for i in active:
            if ended[i]:
                running[i], started = (
                    (started, started + 1) if started < len(seeds) else (-1, started)
                )
                if on_end is not None:
                    on_end(i)
        obs = next_obs
        if ended.any():  # idle envs are reset too: stepping an ended env is an error
            reset_seeds = [seeds[running[i]] if ended[i] and running[i] >= 0 else None
                           for i in range(n)]  # fmt: skip
            obs, _ = vec.reset(seed=reset_seeds, options={"reset_mask": ended})
    ran = [c for c in columns if c["reward"]]
    if store is not None:
        for c in ran:
            store.add_episode(**{k: np.asarray(v) for k, v in c.items()})
    return [_result(c) for c in ran]


def _within_budget(running: list[int], columns: list[dict[str, list]], left: float) -> list[int]:
    """The envs that may step with `left` steps of the budget: the first ones; the episodes of
    the others end at their last step, as truncated (the env idles)."""
    active = [i for i in range(len(running)) if running[i] >= 0]
    keep = len(active) if left >= len(active) else int(max(left, 0))
    for i in active[keep:]:
        if columns[running[i]]["truncated"]:
            columns[running[i]]["truncated"][-1] = True
        running[i] = -1
    return active[:keep]


def _checked(action: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    action = np.asarray(action, dtype=np.float32)
    if action.shape != shape or not np.isfinite(action).all():
        raise DataError(
            f"policy returned action of shape {action.shape} (finite: "
            f"{bool(np.isfinite(action).all())}); expected finite {shape}"
        )
    return action


def _middle(space: gym.Space) -> np.ndarray:
    """An action inside a Box: its centre, where both bounds are finite, else 0 clipped in."""
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    bounded = np.isfinite(low) & np.isfinite(high)
    middle = np.where(bounded, (low + high) / 2, np.clip(0.0, low, high))
    return middle.astype(np.float32)


def _result(columns: dict[str, list]) -> EpisodeResult:
    return EpisodeResult(
        episode_return=float(np.sum(columns["reward"])),
        length=len(columns["reward"]),
        terminated=bool(columns["terminated"][-1]) if columns["terminated"] else False,
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
