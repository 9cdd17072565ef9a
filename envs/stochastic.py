"""Tasks whose futures go more than one way: each step draws one of two discrete outcomes.

A world model that predicts their mean predicts a state that never happens; one that samples
must put its samples on the outcomes. Each env here knows its outcomes exactly
(:func:`gusty_ledge_outcomes`, :func:`pushed_pendulum_outcomes`), so evaluation can
count how many sampled predictions land on a real one (`worldmodel.forward.evaluate`).

* ``GustyLedge-v0``: a cart on a rail is blown a fixed distance left or right each step (a fair
  coin) and is paid for standing near a goal close to a ledge; beyond the ledge it pays per
  step. Standing on the goal is right for the mean gust (there is none) and wrong for the real
  ones: every other step blows it over the edge. It is built so that planning through the mean
  prediction fails.
* ``PushedInvertedPendulum-v0``: MuJoCo's InvertedPendulum whose cart is kicked left or right
  (a fair coin) before each step; the reward and termination are the original's.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

LEDGE_GUST = 0.1  #: metres the wind moves the cart each step, left or right
LEDGE_GOAL = 0.95  #: where the cart is paid to stand
LEDGE_EDGE = 1.0  #: beyond this position the cart pays LEDGE_FALL per metre per step
LEDGE_FALL = 10.0
LEDGE_GAIN = 0.5  #: velocity' = (1 - gain) velocity + gain action
LEDGE_DT = 0.2  #: position' = position + dt velocity' + gust

PUSH = 0.3  #: m/s added to or taken from the cart's velocity before each step (pushed_pendulum)


def _ledge_drive(obs: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position before the gust, velocity') of the ledge for obs [..., 2], action [..., 1]."""
    u = np.clip(action[..., 0], -1.0, 1.0)
    velocity = (1.0 - LEDGE_GAIN) * obs[..., 1] + LEDGE_GAIN * u
    return obs[..., 0] + LEDGE_DT * velocity, velocity


def gusty_ledge_outcomes(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """The two possible next observations [2, ..., 2] (gust left, right) of obs [..., 2] and
    action [..., 1]."""
    position, velocity = _ledge_drive(np.asarray(obs, float), np.asarray(action, float))
    return np.stack([np.stack([position + g, velocity], -1) for g in (-LEDGE_GUST, LEDGE_GUST)])


def gusty_ledge_cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Minus GustyLedge's reward: squared distance to the goal plus the fall beyond the edge."""
    del obs, action
    position = next_obs[..., 0]
    return (position - LEDGE_GOAL).square() + LEDGE_FALL * torch.relu(position - LEDGE_EDGE)


class GustyLedgeEnv(gym.Env):
    """A cart on a rail, its velocity set by the action, blown +-LEDGE_GUST each step.

    obs = [position, velocity]; action in [-1, 1]; reward = -gusty_ledge_cost. Starts uniformly
    in [-1, 0.5] at rest; never terminates (`gymnasium.make` adds the time limit).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": round(1 / LEDGE_DT)}
    dt = LEDGE_DT

    def __init__(self, render_mode: str | None = None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"GustyLedge renders only 'rgb_array', not {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self._obs = np.zeros(2)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._obs = np.array([self.np_random.uniform(-1.0, 0.5), 0.0])
        return self._obs.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        outcomes = gusty_ledge_outcomes(self._obs, np.asarray(action, float))
        obs, self._obs = self._obs, outcomes[int(self.np_random.integers(2))]
        cost = gusty_ledge_cost(*(torch.as_tensor(x) for x in (obs, action, self._obs)))
        return self._obs.copy(), -float(cost), False, False, {}

    def render(self) -> np.ndarray | None:
        """The current state as an RGB frame [64, 64, 3] (render_mode 'rgb_array')."""
        if self.render_mode != "rgb_array":
            return None
        from envs.render import draw_ledge  # drawing lives with the renderers, which import this

        return draw_ledge(self._obs[None])[0]


@cache
def _pendulum_simulator() -> Any:
    from envs.pushed_pendulum import PushedInvertedPendulumEnv  # MuJoCo only when used

    return PushedInvertedPendulumEnv()


def pushed_pendulum_outcomes(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """The two possible next observations [2, N, 4] of obs [N, 4], normalised actions [N, 1]."""
    sim = _pendulum_simulator()
    scale = float(sim.action_space.high[0])  # the task's actions are rescaled from [-1, 1]
    obs, action = np.asarray(obs, float).reshape(-1, 4), np.asarray(action, float).reshape(-1, 1)
    return np.stack([sim.outcomes(o, scale * a) for o, a in zip(obs, action, strict=True)], 1)


def register() -> None:
    """Register the stochastic envs with gymnasium (idempotent)."""
    for env_id, entry, steps in (
        ("GustyLedge-v0", GustyLedgeEnv, 100),
        # A string entry point: gymnasium imports MuJoCo only when the env is made.
        ("PushedInvertedPendulum-v0", "envs.pushed_pendulum:PushedInvertedPendulumEnv", 1000),
    ):
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry, max_episode_steps=steps)


register()
