"""A gymnasium env of your own, trained and controlled by worldmodel (docs/custom_envs.md).

A puck on a square table, pushed by a 2-D force: bring it to the target, without pushing it off
the edge, which ends the episode. Importing this module registers it with gymnasium, so
`wm run --env examples.my_env:MyEnv-v0` finds it. Its reward is written nowhere in torch:
worldmodel learns it, and the termination, from the transitions. `register_exact_cost` shows
how to give it an exact cost instead.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

TARGET = (0.5, 0.5)


class MyEnv(gym.Env):
    """obs [x, y, vx, vy]; action: the force, in [-1, 1]^2; reward 1 - distance to the target,
    -10 for falling off the table (|x| or |y| > 1), which ends the episode."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.state = np.zeros(4, np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self.state = np.r_[self.np_random.uniform(-0.5, 0.5, 2), 0.0, 0.0].astype(np.float32)
        return self.state.copy(), {}

    def step(self, action: np.ndarray) -> tuple:
        velocity = 0.9 * self.state[2:] + 0.2 * np.clip(action, -1.0, 1.0)
        position = self.state[:2] + 0.1 * velocity
        self.state = np.r_[position, velocity].astype(np.float32)
        fell = bool(np.abs(position).max() > 1.0)
        reward = 1.0 - float(np.linalg.norm(position - TARGET)) - 10.0 * fell
        return self.state.copy(), reward, fell, False, {}


gym.register("MyEnv-v0", entry_point=MyEnv, max_episode_steps=100)


def cost(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Minus MyEnv's reward, in torch: [..., 4], [..., 2], [..., 4] -> [...]."""
    distance = (next_obs[..., :2] - next_obs.new_tensor(TARGET)).norm(dim=-1)
    return distance - 1.0 + 10.0 * terminated(next_obs).to(next_obs.dtype)


def terminated(next_obs: torch.Tensor) -> torch.Tensor:
    """MyEnv's termination flag: the puck is off the table. [..., 4] -> bool [...]."""
    return next_obs[..., :2].abs().amax(dim=-1) > 1.0


def register_exact_cost() -> None:
    """Make `MyEnv-v0` a task with this exact cost and termination (`--cost exact`)."""
    import envs

    envs.register_task("MyEnv-v0", cost=cost, terminated=terminated, description="puck to target")
