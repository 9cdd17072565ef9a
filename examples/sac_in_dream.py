"""Train stable-baselines3 SAC entirely inside a learned world model, then try it for real.

    pip install -e ".[sb3]"
    wm train --env Pendulum-v1
    python examples/sac_in_dream.py runs/Pendulum-v1__train__0__<time> --steps 300

The world model of the run folder is a gymnasium env (`worldmodel/Dream-v0`), so SAC needs no
change to train in it. A few hundred steps only show the plumbing; a useful policy needs ~20k.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3 import SAC

from agents.app.dream import register_dream_env
from agents.app.runs.folder import load_world_model
from worldmodel.data.rollout import run_episode

DREAM_ID = register_dream_env()  # the id gymnasium.make knows the dream env by


def train_sac(run_dir: str, steps: int = 300, seed: int = 0) -> SAC:
    """SAC trained for `steps` simulated steps in the world model of `run_dir`."""
    env = gym.make(DREAM_ID, run_dir=run_dir)
    agent = SAC(
        "MlpPolicy", env, learning_starts=min(100, steps // 2), seed=seed, verbose=0, device="cpu"
    )
    agent.learn(total_timesteps=steps)
    env.close()
    return agent


def evaluate(agent: SAC, env: gym.Env, seed: int) -> float:
    """Return of one episode of the agent's deterministic policy in `env`."""
    policy = lambda obs: agent.predict(obs, deterministic=True)[0]  # noqa: E731
    return run_episode(env, policy, seed=seed).episode_return


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder with a trained world model")
    parser.add_argument("--steps", type=int, default=300, help="SAC steps inside the model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    agent = train_sac(args.run_dir, args.steps, args.seed)
    dream = evaluate(agent, gym.make(DREAM_ID, run_dir=args.run_dir), args.seed)
    real = evaluate(agent, load_world_model(args.run_dir).task.make_env(), args.seed)
    print(
        f"SAC after {args.steps} dreamt steps: return {dream:.1f} in the model, "
        f"{real:.1f} in the real env"
    )
    return 0 if np.isfinite([dream, real]).all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
