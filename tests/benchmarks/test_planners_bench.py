"""A tiny run of benchmarks/planners.py, and its pytorch-mppi wrapper against our objective."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.benchmarks.test_smoke import read, run

TINY = ["--data-steps", "300", "--train-steps", "5", "--seeds", "0", "--horizons", "3", "5",
        "--candidates", "1", "2", "--at-candidates", "2", "--at-horizon", "3",
        "--samples-per-candidate", "8", "--budget-ms", "5", "--max-iterations", "3",
        "--episode-steps", "5", "--threads", "1",
        "--set", "model.hidden=16", "train.batch_size=16", "train.eval_every=5",
        "planner.elites=4"]  # fmt: skip


@pytest.mark.slow
def test_planners_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "planners.csv"
    run("benchmarks.planners", *TINY, "--out", str(out))
    rows = read(out)
    planners = {"gradient", "cem", "mppi", "hybrid"}
    if importlib.util.find_spec("pytorch_mppi") is not None:
        planners.add("pytorch-mppi")
    assert {r["planner"] for r in rows} == planners
    for planner in planners:
        mine = [r for r in rows if r["planner"] == planner]
        assert {r["horizon"] for r in mine if r["candidates"] == "2"} == {"3", "5"}
        assert {r["candidates"] for r in mine if r["horizon"] == "3"} == {"1", "2"}
        assert all(1 <= int(r["iterations"]) <= 3 for r in mine)
        assert all(math.isfinite(float(r["return"])) for r in mine)
    assert out.with_suffix(".png").is_file()
    replot = tmp_path / "replot.csv"
    run("benchmarks.planners", "--plot", str(out), "--out", str(replot), "--horizons", "3", "5",
        "--candidates", "1", "2", "--at-candidates", "2", "--at-horizon", "3")  # fmt: skip
    assert replot.with_suffix(".png").is_file()


def test_reference_mppi_scores_like_mpc_agent() -> None:
    """The wrapper's rollout cost of a sequence equals MPCAgent's objective on it (same z)."""
    pytest.importorskip("pytorch_mppi")
    from agents.configurator import build_agent, build_model, make_config
    from benchmarks.planners import ReferenceMPPI
    from envs import make_task

    config = make_config({"env": "InvertedPendulum-v5", "model.hidden": 16})
    task = make_task(config.env)
    torch.manual_seed(0)
    model = build_model(config.model, task.obs_dim, task.act_dim).eval()
    reference = ReferenceMPPI(model, task, config, samples=4, iterations=1)
    agent = build_agent(config, task, model, model.device)
    state = torch.tensor([0.0, 0.15, 0.5, 1.0])  # near the 0.2 rad limit: terminations happen
    reference.z = model.sample_prior(config.planner.horizon, reference.latents)
    actions = torch.rand(config.planner.horizon, 4, task.act_dim) * 2 - 1
    latents, samples = reference.latents, actions.shape[1]
    x = torch.cat([state, state, torch.ones(1)]).expand(latents * samples, -1)
    cost = torch.zeros(latents * samples)
    with torch.no_grad():
        expected = agent.objective(state, reference.z)(actions)
        for t, u in enumerate(actions.repeat(1, latents, 1)):
            x = reference._dynamics(x, u, t)
            cost += reference._cost(x, u, t)
    np.testing.assert_allclose(cost.view(latents, samples).mean(0), expected, rtol=1e-4)
