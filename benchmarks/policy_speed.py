"""Policy speed: microseconds per action of the learned policy acting alone (no planning), and
milliseconds per policy update (imagined rollouts through the model, the uncertainty penalty's
MC-dropout rollouts, the backward pass).

    python -m benchmarks.policy_speed [--threads 1] [--updates 20]

Default PolicyConfig and ModelConfig networks on HalfCheetah-v5 dimensions (the largest
supported task) and on Pendulum-v1; the weights are untrained (speed does not depend on them),
the policy's start states and the penalty's calibration are from 2,000 random steps.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from agents.configurator import build_model, build_penalty, build_policy_parts, set_threads
from agents.configurator.config import PolicyConfig
from agents.configurator.presets import make_config
from agents.policy import Policy, PolicyAgent
from benchmarks.common import random_steps
from envs import make_task


def microseconds_per_action(task_id: str, calls: int) -> float:
    task, config = make_task(task_id), PolicyConfig()
    agent = PolicyAgent(Policy(task.obs_dim, task.act_dim, config.hidden, config.layers))
    obs = np.zeros(task.obs_dim, np.float32)
    for _ in range(10):
        agent.act(obs)
    start = time.perf_counter()
    for _ in range(calls):
        agent.act(obs)
    return 1e6 * (time.perf_counter() - start) / calls


def milliseconds_per_update(task_id: str, updates: int) -> float:
    """A policy update at the task's default config, on random-action data of the task."""
    config = make_config({"env": task_id}, "run")
    task, store = random_steps(task_id, 2_000, seed=0)
    model = build_model(config.model, task.obs_dim, task.act_dim)
    model.set_normalization(store.stats())
    penalty = build_penalty(config.policy, model)
    rng = np.random.default_rng(0)
    penalty.calibrate_from(store, config.policy.horizon, rng)
    parts = build_policy_parts(config, task, model, store.stats(), torch.device("cpu"), penalty)
    obs = store.data["obs"]
    starts = torch.from_numpy(obs[rng.integers(len(obs), size=config.policy.batch_size)])
    for _ in range(2):
        parts.policy_learner.update(starts)
    start = time.perf_counter()
    for _ in range(updates):
        parts.policy_learner.update(starts)
    return 1e3 * (time.perf_counter() - start) / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: the cores)")
    parser.add_argument("--updates", type=int, default=0, help="also time this many updates")
    args = parser.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    for task_id in ("Pendulum-v1", "HalfCheetah-v5"):
        print(f"{task_id:<16} {microseconds_per_action(task_id, args.calls):8.1f} us/action")
        if args.updates:
            ms = milliseconds_per_update(task_id, args.updates)
            print(f"{task_id:<16} {ms:8.1f} ms/policy update")


if __name__ == "__main__":
    main()
