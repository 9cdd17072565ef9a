"""PushedInvertedPendulum-v0's env: MuJoCo's InvertedPendulum with the cart kicked before each
step (see `envs.stochastic`). Its own module so that importing the tasks loads no MuJoCo."""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
from gymnasium.envs.mujoco.inverted_pendulum_v5 import InvertedPendulumEnv

from envs.stochastic import PUSH


class PushedInvertedPendulumEnv(InvertedPendulumEnv):
    """InvertedPendulum-v5 whose cart velocity changes by +-PUSH (a fair coin) before each step."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._push(float(self.np_random.choice((-PUSH, PUSH))))
        return super().step(action)

    def _push(self, push: float) -> None:
        qvel = self.data.qvel.copy()
        qvel[0] += push
        self.set_state(self.data.qpos.copy(), qvel)

    def outcomes(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The two possible next observations [2, 4] (push left, right) of obs [4], action [1]
        (physical units). Simulates both pushes from obs (the full state: qpos, qvel) and
        restores the env's state.
        """
        spec = mujoco.mjtState.mjSTATE_INTEGRATION  # everything a step reads, controls included
        saved = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, saved, spec)
        results = []
        for push in (-PUSH, PUSH):
            self.set_state(obs[:2], obs[2:])
            self._push(push)
            self.do_simulation(action, self.frame_skip)
            results.append(self._get_obs())
        mujoco.mj_setState(self.model, self.data, saved, spec)
        return np.stack(results)
