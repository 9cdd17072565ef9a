"""Evaluation episodes, one after another or side by side in a vector env: the same episodes.

A scripted actor whose action is a fixed function of the observation makes each episode's return
a function of its seed alone, so the batched evaluation must return exactly the sequential one's
returns, episode by episode, however many envs run side by side.
"""

from __future__ import annotations

import numpy as np
import pytest

from agents.app.evaluate import evaluate
from envs import TASKS


class Scripted:
    """a = tanh(W obs), for one observation (`act`) or a batch of envs (`act_batch`)."""

    horizon, last = 1, None

    def __init__(self, obs_dim: int, act_dim: int) -> None:
        self.w = np.random.default_rng(0).normal(size=(act_dim, obs_dim)).astype(np.float32)
        self.calls: list[list[int]] = []
        self.resets: list[list[int]] = []

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(self.w @ obs)

    def act_batch(self, obs: np.ndarray, envs: list[int]) -> np.ndarray:
        self.calls.append(list(envs))
        return np.stack([self.act(o) for o in obs])

    def reset(self) -> None: ...

    def reset_envs(self, envs: list[int]) -> None:
        self.resets.append(list(envs))

    def generators(self) -> dict:
        return {}


@pytest.mark.parametrize("envs", [2, 3, 8])
def test_a_vector_env_evaluation_returns_each_episodes_sequential_return(envs: int) -> None:
    """InvertedPendulum's episodes end at different steps, so envs finish out of step, start
    the next episode, and idle at the end; 5 episodes."""
    task = TASKS["InvertedPendulum-v5"]()
    sequential = evaluate(Scripted(task.obs_dim, task.act_dim), task, 5, seed=3)
    actor = Scripted(task.obs_dim, task.act_dim)
    batched = evaluate(actor, task, 5, seed=3, envs=envs)
    assert batched == sequential
    assert len(set(sequential)) > 1  # the seeds give different episodes
    width = min(envs, 5)
    assert actor.calls[0] == list(range(width))
    assert all(len(c) <= width for c in actor.calls)
    assert len(actor.calls[-1]) < width  # idle envs are not planned for
    assert sum(len(r) for r in actor.resets) == 5  # every episode's end is reported once


def test_an_actor_without_act_batch_is_evaluated_one_episode_after_another() -> None:
    task = TASKS["InvertedPendulum-v5"]()
    actor = Scripted(task.obs_dim, task.act_dim)
    plain = type("Plain", (), {k: getattr(actor, k) for k in ("act", "reset", "generators")})()
    assert evaluate(plain, task, 3, seed=1, envs=4) == evaluate(actor, task, 3, seed=1)


def test_a_policy_is_evaluated_side_by_side_with_its_sequential_returns() -> None:
    """PolicyAgent.act_batch: one forward pass for the envs running, the returns of `act`."""
    import torch

    from agents.policy import Policy, PolicyAgent

    task = TASKS["InvertedPendulum-v5"]()
    torch.manual_seed(0)
    agent = PolicyAgent(Policy(task.obs_dim, task.act_dim))
    sequential = evaluate(agent, task, 4, seed=1)
    batched = evaluate(agent, task, 4, seed=1, envs=3)
    np.testing.assert_allclose(batched, sequential, rtol=1e-5)
