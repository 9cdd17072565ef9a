"""Policy speed: microseconds per action of the learned policy acting alone (no planning).

    python -m benchmarks.policy_speed [--threads 1]

Default PolicyConfig network on HalfCheetah-v5 dimensions (the largest supported task) and on
Pendulum-v1; the weights are untrained (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from agents.configurator import set_threads
from agents.configurator.config import PolicyConfig
from agents.policy import Policy, PolicyAgent
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: the cores)")
    args = parser.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    for task_id in ("Pendulum-v1", "HalfCheetah-v5"):
        print(f"{task_id:<16} {microseconds_per_action(task_id, args.calls):8.1f} us/action")


if __name__ == "__main__":
    main()
