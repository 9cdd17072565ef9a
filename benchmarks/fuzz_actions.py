"""Fuzz the actors: every action of the MPC agent (each planner) and of the policy agent must be
finite and inside [-1, 1], whatever the state and however broken the model.

    python -m benchmarks.fuzz_actions                  # 10,000 cases (about a minute on 1 core)
    python -m benchmarks.fuzz_actions --cases 500

States are drawn by hypothesis (derandomised, so every run draws the same cases): zeros, signed
zeros, subnormals, 1e-30, +-1e30, the float32 extremes +-3.4e38 and ordinary values, mixed
within a state; no NaN or inf (those are bad input: `Perception` rejects them). Models are
healthy (random weights), huge (weights x 1e20, overflowing), NaN (every weight NaN), inf (the
output layer inf) or flaky (NaN wherever an action exceeds 0.5 or the state is beyond 1e3).
Every call counts once; the cases are split 2,000 per planner (gradient, CEM, MPPI, hybrid, each
over all five models) and 2,000 for the policy agent (healthy, huge, NaN and inf weights, with and
without exploration noise). `tests/test_fuzz_actions.py` runs the same cases and asserts the
counts are zero (and that a NaN or inf model always makes the MPC agent fall back).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import Tensor

from agents.configurator import build_planner
from agents.configurator.config import PlannerConfig
from agents.mpc import MPCAgent
from agents.policy import Policy, PolicyAgent
from worldmodel.cost.trajectory import TrajectoryCost
from worldmodel.forward.model import ForwardModel
from worldmodel.perception import Perception

STATE_DIM, ACTION_DIM = 3, 2
PLANNERS = ("gradient", "cem", "mppi", "hybrid")
MODELS = ("healthy", "huge", "nan", "inf", "flaky")
BROKEN = ("nan", "inf")  #: models whose every prediction is non-finite: the agent must fall back
POLICIES = ("healthy", "huge", "nan", "inf")
CASES = 10_000
F32_MAX = float(np.finfo(np.float32).max)
EXTREMES = (0.0, -0.0, 1e-45, -1e-45, 1e-30, -1e-30, 1.0, -1.0, 1e6, -1e6)
EXTREMES += (1e30, -1e30, F32_MAX, -F32_MAX)


def fuzz_cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """A quadratic cost on the predicted state, so every model output reaches the objective."""
    return next_obs.square().sum(-1) + 0.1 * action.square().sum(-1) + 1e-3 * obs.square().sum(-1)


class FlakyModel(ForwardModel):
    """A healthy model that predicts NaN for some inputs: large actions and far-away states."""

    @staticmethod
    def _spoil(s: Tensor, a: Tensor, out: Tensor) -> Tensor:
        bad = (a > 0.5).any(-1, keepdim=True) | (s.abs() > 1e3).any(-1, keepdim=True)
        return torch.where(bad, torch.full_like(out, float("nan")), out)

    def _predict(self, s: Tensor, a: Tensor, z: Tensor) -> Tensor:
        return self._spoil(s, a, super()._predict(s, a, z))

    def rollout(self, s0: Tensor, actions: Tensor, z: Tensor | None = None, **kw) -> Tensor:
        states = super().rollout(s0, actions, z, **kw)
        before = torch.cat([s0.expand_as(states[:1]), states[:-1]])
        return self._spoil(before, actions, states)


def _break(module: torch.nn.Module, kind: str) -> None:
    """Make `module`'s weights huge, NaN or (output layer) inf; 'healthy' leaves them alone."""
    with torch.no_grad():
        for p in module.parameters():
            if kind == "huge":
                p.mul_(1e20)
            elif kind == "nan":
                p.fill_(float("nan"))
        if kind == "inf":  # the output layer: the model's decoder, the policy's MLP
            head = module.decoder if isinstance(module, ForwardModel) else module.net
            head[-1].weight.fill_(float("inf"))


@cache
def mpc_agent(planner: str, model: str) -> MPCAgent:
    """The MPC agent of `planner` over a small model of kind `model` (tiny planner settings)."""
    torch.manual_seed(0)
    cls = FlakyModel if model == "flaky" else ForwardModel
    net = cls(STATE_DIM, ACTION_DIM, latent_dim=2, hidden=16, layers=1, dropout=0.0)
    _break(net, model)
    config = PlannerConfig(
        kind=planner, horizon=3, iterations=2, candidates=2, population=8, elites=2
    )
    return MPCAgent(
        net.eval(),
        Perception(STATE_DIM),
        TrajectoryCost(fuzz_cost),
        build_planner(config, ACTION_DIM, torch.device("cpu")),
        latent_samples=2,
        seed=0,
    )


@cache
def policy_agent(kind: str, noisy: bool) -> PolicyAgent:
    """The policy agent over a small policy of kind `kind`; `noisy`: exploration noise 0.5."""
    torch.manual_seed(0)
    policy = Policy(STATE_DIM, ACTION_DIM, hidden=16)
    _break(policy, kind)
    return PolicyAgent(policy, noise=0.5 if noisy else 0.0, seed=0)


def states() -> st.SearchStrategy[np.ndarray]:
    """float32 states [S], finite, with extreme and ordinary entries mixed."""
    element = st.one_of(
        st.sampled_from(EXTREMES),
        st.floats(-10.0, 10.0, width=32),
        st.floats(-F32_MAX, F32_MAX, width=32),
    )
    return arrays(np.float32, (STATE_DIM,), elements=element)


@dataclass
class Counts:
    """What a fuzz run saw."""

    calls: int = 0
    non_finite: int = 0  #: actions with a NaN or inf entry
    out_of_bounds: int = 0  #: actions outside [-1, 1] (or of the wrong shape)
    fallbacks: int = 0  #: calls where the agent used its safe action
    broken_without_fallback: int = 0  #: MPC calls on a NaN/inf model that did not fall back

    def add(self, other: Counts) -> Counts:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


def _record(counts: Counts, action: np.ndarray, fallback: bool, strict: bool) -> None:
    finite = bool(np.isfinite(action).all())
    inside = action.shape == (ACTION_DIM,) and bool((np.abs(action) <= 1.0).all())
    counts.calls += 1
    counts.non_finite += not finite
    counts.out_of_bounds += not inside
    counts.fallbacks += fallback
    if strict:
        assert finite and inside, action


def _settings(cases: int) -> Callable:
    return settings(
        max_examples=cases,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


def fuzz_mpc(planner: str, cases: int, strict: bool = True) -> Counts:
    """`cases` calls of the MPC agent of `planner`, over every model kind, on fuzzed states."""
    counts = Counts()

    @_settings(cases)
    @given(state=states(), model=st.sampled_from(MODELS), fresh=st.booleans())
    def case(state: np.ndarray, model: str, fresh: bool) -> None:
        agent = mpc_agent(planner, model)
        if fresh:  # else the previous case's plan is the warm start (and the fallback)
            agent.reset()
        action = agent.act(state)
        assert agent.last is not None
        _record(counts, action, agent.last.fallback, strict)
        if model in BROKEN and not agent.last.fallback:
            counts.broken_without_fallback += 1
            assert not strict, f"{model} model without fallback"

    case()
    return counts


def fuzz_policy(cases: int, strict: bool = True) -> Counts:
    """`cases` calls of the policy agent over every policy kind, with and without noise."""
    counts = Counts()

    @_settings(cases)
    @given(state=states(), kind=st.sampled_from(POLICIES), noisy=st.booleans(), fresh=st.booleans())
    def case(state: np.ndarray, kind: str, noisy: bool, fresh: bool) -> None:
        agent = policy_agent(kind, noisy)
        if fresh:
            agent.reset()
        action = agent.act(state)
        _record(counts, action, agent.last.fallback, strict)

    case()
    return counts


def fuzz_all(cases: int = CASES, strict: bool = False) -> dict[str, Counts]:
    """The whole fuzz: cases / 5 per planner and for the policy (the remainder to the policy)."""
    share = cases // (len(PLANNERS) + 1)
    out = {f"mpc-{p}": fuzz_mpc(p, share, strict) for p in PLANNERS}
    out["policy"] = fuzz_policy(cases - share * len(PLANNERS), strict)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=CASES, help="calls in all")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # A broken model falls back on every call; the agents' warnings would flood the output.
    logging.getLogger("agents").setLevel(logging.ERROR)
    start = time.perf_counter()
    results = fuzz_all(args.cases)
    total = Counts()
    print(f"{'actor':<14} {'calls':>6} {'non-finite':>10} {'out-of-bounds':>13} {'fallbacks':>9}")
    for name, c in [*results.items(), ("total", total)]:
        if name != "total":
            total.add(c)
        print(f"{name:<14} {c.calls:>6} {c.non_finite:>10} {c.out_of_bounds:>13} {c.fallbacks:>9}")
    print(
        f"NaN/inf models without MPC fallback: {total.broken_without_fallback}; "
        f"{time.perf_counter() - start:.0f}s"
    )


if __name__ == "__main__":
    main()
