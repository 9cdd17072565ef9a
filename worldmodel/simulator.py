"""A learned world model as a simulator: gymnasium's Env API, and a batched torch version.

A step draws z from the prior (seeded), predicts the next state with the forward model, pays the
task's cost (reward = -cost) and ends where the task's termination says so; episodes start from
states of the real data. Nothing here knows about tasks or run folders: callers pass the parts
(see `agents.app.dream` for building one from a run folder, and for the registered gymnasium id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from worldmodel.forward.model import ForwardModel
from worldmodel.types import CostFn, TerminationFn


class FrameRenderer(Protocol):
    """Draws states [T, S] as frames [T, H, W, 3] uint8 (e.g. `envs.render.StateRenderer`)."""

    def render(self, states: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class DreamStep:
    """One step of N simulated copies; finished copies already restarted (same-step autoreset).

    obs: [N, S] states to act on next (a fresh start state where the copy finished);
    reward: [N]; terminated, truncated: bool [N]; final_obs: [N, S] the predicted next states,
    before any restart (what a finished copy's last transition led to).
    """

    obs: Tensor
    reward: Tensor
    terminated: Tensor
    truncated: Tensor
    final_obs: Tensor


class BatchedWorldModelEnv:
    """N copies of the learned simulator stepped together on the model's device.

    A predicted state that is not finite (the model blew up) ends its episode as terminated and
    keeps the previous state, so agents never see NaN. The model is put in eval mode: dropout off,
    so the only randomness is z and the start states, both from one seeded generator.
    """

    def __init__(
        self,
        model: ForwardModel,
        cost: CostFn,
        start_states: np.ndarray | Tensor,
        num_envs: int,
        *,
        terminated: TerminationFn | None = None,
        max_episode_steps: int | None = None,
        seed: int | None = None,
    ) -> None:
        if num_envs <= 0:
            raise ValueError(f"num_envs must be positive, got {num_envs}")
        if max_episode_steps is not None and max_episode_steps <= 0:
            raise ValueError(f"max_episode_steps must be positive, got {max_episode_steps}")
        self.model = model.eval()
        self.device, self.dtype = model.device, model.state_mean.dtype
        starts = torch.as_tensor(start_states, dtype=self.dtype, device=self.device)
        if starts.ndim != 2 or starts.shape[1] != model.state_dim or not len(starts):
            raise ValueError(
                f"start_states must be [M, {model.state_dim}] with M > 0, got {tuple(starts.shape)}"
            )
        self.start_states = starts
        self.cost, self.terminated = cost, terminated
        self.num_envs, self.max_episode_steps = num_envs, max_episode_steps
        self.state_dim, self.action_dim = model.state_dim, model.action_dim
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.state = self._draw_starts()
        self.elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    def _draw_starts(self) -> Tensor:
        """[N, S] start states drawn uniformly from the data's."""
        index = torch.randint(
            len(self.start_states), (self.num_envs,), generator=self.generator, device=self.device
        )
        return self.start_states[index]

    def reset(self, seed: int | None = None) -> Tensor:
        """Restart every copy; returns the start states [N, S]. A seed restarts the stream."""
        if seed is not None:
            self.generator.manual_seed(seed)
        self.state = self._draw_starts()
        self.elapsed.zero_()
        return self.state.clone()

    @torch.no_grad()
    def step(self, actions: Tensor) -> DreamStep:
        """Advance all copies under actions [N, A] (clipped to [-1, 1], the model's range)."""
        actions = actions.to(self.device, self.dtype).clamp(-1.0, 1.0)
        state = self.state
        z = self.model.sample_prior(self.num_envs, generator=self.generator)
        predicted = self.model.step(state, actions, z)
        finite = torch.isfinite(predicted).all(-1)
        next_state = torch.where(finite[:, None], predicted, state)
        reward = torch.where(finite, -self.cost(state, actions, next_state), 0.0)
        terminated = ~finite
        if self.terminated is not None:
            terminated = terminated | self.terminated(next_state)
        self.elapsed += 1
        truncated = torch.zeros_like(terminated)
        if self.max_episode_steps is not None:
            truncated = (self.elapsed >= self.max_episode_steps) & ~terminated
        done = terminated | truncated
        # Starts are drawn for every copy and used where one finished: no host sync per step.
        self.state = torch.where(done[:, None], self._draw_starts(), next_state)
        self.elapsed = torch.where(done, 0, self.elapsed)
        return DreamStep(self.state.clone(), reward, terminated, truncated, next_state)


class WorldModelEnv(gym.Env[np.ndarray, np.ndarray]):
    """The learned simulator as a gymnasium Env (one copy; float32 observations and actions).

    Actions live in [-1, 1] like the tasks' envs. `reset(seed=...)` makes the episode
    reproducible (start state and every z). Its episodes are those of copy 0 of a
    `BatchedWorldModelEnv` with the same seed: after an episode ends, an unseeded `reset` starts
    from the state the batched env restarted with. With render_mode 'rgb_array', `render` draws
    the current state with `renderer`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        model: ForwardModel,
        cost: CostFn,
        start_states: np.ndarray | Tensor,
        *,
        terminated: TerminationFn | None = None,
        max_episode_steps: int | None = None,
        renderer: FrameRenderer | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        if render_mode is not None and renderer is None:
            raise ValueError(f"render_mode {render_mode!r} needs a renderer")
        self.core = BatchedWorldModelEnv(
            model, cost, start_states, 1, terminated=terminated, max_episode_steps=max_episode_steps
        )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (model.state_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (model.action_dim,), np.float32)
        self.render_mode, self.renderer = render_mode, renderer
        self._seeded = self._restarted = False
        self._obs = np.zeros(model.state_dim, np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None and not self._seeded:
            # The first unseeded reset takes its seed from gymnasium's own (random) generator.
            seed = int(self.np_random.integers(2**62))
        self._seeded = True
        restarted, self._restarted = self._restarted, False
        if seed is None and restarted:
            start = self.core.state[0]
        else:
            start = self.core.reset(seed=seed)[0]
        self._obs = self._to_numpy(start)
        return self._obs.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        result = self.core.step(torch.as_tensor(np.asarray(action, np.float32)).reshape(1, -1))
        # Return the transition's own next state: gymnasium envs do not restart by themselves.
        self._obs = self._to_numpy(result.final_obs[0])
        self._restarted = bool(result.terminated[0] | result.truncated[0])
        return (
            self._obs.copy(),
            float(result.reward[0]),
            bool(result.terminated[0]),
            bool(result.truncated[0]),
            {},
        )

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """Frame [H, W, 3] uint8 of the current state ('rgb_array'), else None."""
        if self.render_mode != "rgb_array" or self.renderer is None:
            return None
        return self.renderer.render(self._obs[None])[0]

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None

    @staticmethod
    def _to_numpy(state: Tensor) -> np.ndarray:
        return state.detach().to("cpu", torch.float32).numpy().copy()
