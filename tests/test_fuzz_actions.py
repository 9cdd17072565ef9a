"""Property tests (hypothesis): the MPC agent, with every planner, and the policy agent never emit
a non-finite or out-of-bound action, for fuzzed states (zeros, subnormals, +-1e30, float32
extremes, mixed) and for healthy, huge, NaN, inf and flaky models; a NaN or inf model always makes
the MPC agent fall back to its safe action. The cases live in `benchmarks/fuzz_actions.py`.

The fast tests run 500 cases; the slow ones the full 10,000 (2,000 per planner, 2,000 for the
policy), as `python -m benchmarks.fuzz_actions` does.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.mpc import SINGLE
from agents.policy import Policy, PolicyAgent

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_actions.py"
_spec = importlib.util.spec_from_file_location("fuzz_actions", SCRIPT)
assert _spec is not None and _spec.loader is not None
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_actions"] = fuzz  # dataclasses look their module up
_spec.loader.exec_module(fuzz)

FULL = fuzz.CASES // (len(fuzz.PLANNERS) + 1)  # 2,000 per planner and for the policy
FAST = 100


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    agents_log = logging.getLogger("agents")
    level = agents_log.level
    agents_log.setLevel(logging.ERROR)  # broken models fall back on every call
    yield
    agents_log.setLevel(level)


def _assert_clean(counts, cases: int) -> None:
    assert counts.calls == cases
    assert counts.non_finite == 0 and counts.out_of_bounds == 0
    assert counts.broken_without_fallback == 0


@pytest.mark.parametrize("planner", fuzz.PLANNERS)
def test_mpc_actions_are_finite_and_in_bounds(planner: str) -> None:
    counts = fuzz.fuzz_mpc(planner, FAST)
    _assert_clean(counts, FAST)
    assert 0 < counts.fallbacks < FAST


def test_policy_actions_are_finite_and_in_bounds() -> None:
    counts = fuzz.fuzz_policy(FAST)
    _assert_clean(counts, FAST)
    assert 0 < counts.fallbacks < FAST


@pytest.mark.slow
@pytest.mark.parametrize("planner", fuzz.PLANNERS)
def test_mpc_actions_10k_share(planner: str) -> None:
    _assert_clean(fuzz.fuzz_mpc(planner, FULL), FULL)


@pytest.mark.slow
def test_policy_actions_10k_share() -> None:
    _assert_clean(fuzz.fuzz_policy(fuzz.CASES - FULL * len(fuzz.PLANNERS)), FULL)


def test_a_broken_model_falls_back_to_the_shifted_plan_then_zero() -> None:
    healthy = fuzz.mpc_agent("gradient", "healthy")
    healthy.reset()
    healthy.act(np.zeros(3, np.float32))
    assert healthy.last is not None and not healthy.last.fallback
    plan = healthy._plans[SINGLE].clone()

    broken = fuzz.mpc_agent("gradient", "nan")
    broken.reset()
    broken._plans[SINGLE] = plan  # as if the model broke during an episode
    before = broken.fallbacks
    action = broken.act(np.zeros(3, np.float32))
    assert broken.last is not None and broken.last.fallback
    np.testing.assert_array_equal(action, plan[0].numpy())
    assert broken.fallbacks == before + 1
    broken.reset()
    np.testing.assert_array_equal(broken.act(np.ones(3, np.float32)), np.zeros(2, np.float32))


def test_policy_with_nan_weights_falls_back_to_previous_then_zero(
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.manual_seed(0)
    policy = Policy(3, 2, hidden=8)
    agent = PolicyAgent(policy)
    first = agent.act(np.zeros(3, np.float32))
    assert np.isfinite(first).all() and not agent.last.fallback
    with torch.no_grad():
        for p in policy.parameters():
            p.fill_(float("nan"))
    with caplog.at_level(logging.WARNING, logger="agents.policy"):
        np.testing.assert_array_equal(agent.act(np.ones(3, np.float32)), first)
    assert agent.last.fallback and agent.fallbacks == 1
    assert "non-finite action" in caplog.text
    agent.reset()
    np.testing.assert_array_equal(agent.act(np.ones(3, np.float32)), np.zeros(2, np.float32))
    assert agent.fallbacks == 2
