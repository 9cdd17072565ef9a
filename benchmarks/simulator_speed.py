"""Transitions per second of the batched learned simulator (BatchedWorldModelEnv).

    python benchmarks/simulator_speed.py [--envs 1024] [--steps 200] [--threads N]

Uses an untrained model of the default size (hidden 256, 3 layers: speed does not depend on the
weights) on Pendulum-v1, with start states from real resets, on the CPU unless --device says
otherwise. Each step includes the latent draw, the model, the task's cost and the autoreset.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from agents.configurator import build_model, set_threads
from agents.configurator.config import ModelConfig
from envs import make_task
from worldmodel.simulator import BatchedWorldModelEnv


def transitions_per_second(
    num_envs: int, steps: int, device: str = "cpu", env_id: str = "Pendulum-v1"
) -> float:
    """Median over 5 repeats of (num_envs * steps) / seconds, after one warm-up repeat."""
    task = make_task(env_id)
    model = build_model(ModelConfig(), task.obs_dim, task.act_dim).to(device)
    env = task.make_env()
    starts = np.stack([env.reset(seed=i)[0] for i in range(64)])
    sim = BatchedWorldModelEnv(
        model,
        task.cost,
        starts,
        num_envs,
        terminated=task.terminated,
        max_episode_steps=task.max_episode_steps,
        seed=0,
    )
    generator = torch.Generator(device=device).manual_seed(0)
    actions = torch.rand(steps, num_envs, task.act_dim, generator=generator, device=device) * 2 - 1
    rates = []
    for _ in range(6):
        start = time.perf_counter()
        for t in range(steps):
            sim.step(actions[t])
        if device != "cpu":
            torch.cuda.synchronize()
        rates.append(num_envs * steps / (time.perf_counter() - start))
    return float(np.median(rates[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    set_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, device: {args.device}")
    for n in args.envs:
        rate = transitions_per_second(n, args.steps, args.device)
        print(f"{n:>6} copies: {rate:>12,.0f} transitions/s")


if __name__ == "__main__":
    main()
