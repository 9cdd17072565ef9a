"""Control under stochastic futures: on GustyLedge the mean future misleads, sampled ones do not.

With the exact dynamics written as a world model, an MPC agent that plans through sampled gusts
keeps its distance from the ledge; one that plans through the mean (no gust, which never happens)
stands on the goal and is blown over the edge every other step.
"""

import pytest
import torch
from torch import Generator, Tensor, nn

from agents.mpc import MPCAgent
from agents.planners import PlannerSettings, make_planner
from envs import make_task
from envs.stochastic import LEDGE_DT, LEDGE_EDGE, LEDGE_GAIN, LEDGE_GUST
from worldmodel.cost.risk import Risk
from worldmodel.cost.trajectory import TrajectoryCost
from worldmodel.perception import Perception


class LedgeDynamics(nn.Module):
    """GustyLedge's exact dynamics; z's sign is the gust (`mean`: no gust, the mean future)."""

    state_dim, action_dim, latent_dim = 2, 1, 1

    def __init__(self, mean: bool) -> None:
        super().__init__()
        self.mean = mean
        self.register_buffer("anchor", torch.zeros(()))

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def sample_prior(self, *shape: int, generator: Generator | None = None) -> Tensor:
        return torch.randn(*shape, 1, generator=generator)

    def step(
        self, s: Tensor, a: Tensor, z: Tensor | None = None, generator: Generator | None = None
    ) -> Tensor:
        z = self.sample_prior(*s.shape[:-1], generator=generator) if z is None else z
        velocity = (1 - LEDGE_GAIN) * s[..., 1] + LEDGE_GAIN * a[..., 0].clamp(-1, 1)
        gust = 0.0 if self.mean else LEDGE_GUST * torch.sign(z[..., 0])
        return torch.stack([s[..., 0] + LEDGE_DT * velocity + gust, velocity], -1)

    def rollout(
        self,
        s0: Tensor,
        actions: Tensor,
        z: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        z = self.sample_prior(*actions.shape[:-1], generator=generator) if z is None else z
        states, s = [], s0
        for t in range(actions.shape[0]):
            s = self.step(s, actions[t], z[t])
            states.append(s)
        return torch.stack(states)


def _falls(mean: bool, risk: Risk, seed: int) -> int:
    """Steps of a 40-step episode that end beyond the ledge's edge."""
    task = make_task("GustyLedge-v0")
    settings = PlannerSettings(10, 1, torch.device("cpu"), iterations=10, candidates=3, lr=0.1)
    planner = make_planner("gradient", settings)
    agent = MPCAgent(
        LedgeDynamics(mean), Perception(2), TrajectoryCost(task.cost), planner,
        latent_samples=1 if mean else 16, risk=risk, seed=seed,
    )  # fmt: skip
    env = task.make_env(seed=seed)
    obs, _ = env.reset(seed=seed)
    falls = 0
    for _ in range(40):
        obs, *_ = env.step(agent.act(obs))
        falls += int(obs[0] > LEDGE_EDGE)
    return falls


@pytest.mark.slow
def test_planning_through_sampled_gusts_beats_planning_through_the_mean() -> None:
    mean = sum(_falls(True, Risk("mean"), seed) for seed in range(3))
    sampled = sum(_falls(False, Risk("mean"), seed) for seed in range(3))
    cautious = sum(_falls(False, Risk("cvar", 0.25), seed) for seed in range(3))
    assert mean >= 10  # near the goal, gusts blow it over
    assert sampled <= mean / 4 and cautious <= mean / 4, (sampled, cautious, mean)
