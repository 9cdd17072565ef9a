"""`loop.renormalize`: a run's learners end normalised by all the data it collected (not by its
random seed steps), and the run goes on from the renormalised nets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_run import TINY_LOOP

import agents.app.loop
from agents.app.cli import main
from agents.app.runs.folder import CHECKPOINT_FILE
from worldmodel.cost.learned import CostStats
from worldmodel.data.store import EpisodeStore
from worldmodel.io.checkpoint import load_checkpoint

RUN = ["--env", "Pendulum-v1", "--steps", "550", "--loop.seed_steps", "150", *TINY_LOOP,
       "--agent", "mpc+policy", "--cost", "learned", "--threads", "1"]  # fmt: skip


def _final(tmp_path: Path, *extra: str) -> tuple[dict, EpisodeStore]:
    runs = tmp_path / "runs"
    assert main(["run", *RUN, *extra, "--runs_dir", str(runs)]) == 0
    (run_dir,) = runs.iterdir()
    groups, _ = load_checkpoint(run_dir / CHECKPOINT_FILE)
    return groups, EpisodeStore.load(run_dir / "data.npz")


def _seed_stats(store: EpisodeStore):
    seed = EpisodeStore(store.obs_dim, store.act_dim)
    data = {k: v[:150] for k, v in store.data.items()}
    seed.add_episode(data["obs"], data["action"], data["reward"], data["next_obs"],
                     data["terminated"], data["truncated"])  # fmt: skip
    return seed.stats()


@pytest.mark.parametrize("on", [True, False])
def test_every_learner_ends_normalised_by_all_the_data_only_with_renormalize(
    tmp_path: Path, on: bool
) -> None:
    groups, store = _final(tmp_path, "--loop.renormalize" if on else "--loop.no-renormalize")
    want = store.stats() if on else _seed_stats(store)
    other = _seed_stats(store) if on else store.stats()
    assert not torch.allclose(want.state_std, other.state_std, rtol=1e-2)  # the data moved
    for group in ("model", "cost", "policy", "critic", "critic_target"):
        assert torch.allclose(groups[group]["state_mean"], want.state_mean, atol=1e-5), group
        assert torch.allclose(groups[group]["state_std"], want.state_std, rtol=1e-5), group
    for group in ("model", "cost"):
        assert torch.allclose(groups[group]["delta_std"], want.delta_std, rtol=1e-5), group


def test_the_loop_s_renormalisations_keep_every_learner_s_outputs(
    tmp_path: Path, monkeypatch
) -> None:
    real, calls = agents.app.loop.renormalize, []

    def checked(learners, store) -> None:
        torch.manual_seed(0)
        s = torch.from_numpy(store.data["obs"][::7]).float()
        a = torch.rand(len(s), 1) * 2 - 1
        z = torch.randn(len(s), learners.model.latent_dim)
        parts, cost = learners.parts, learners.cost_trainer.model

        def outputs() -> list[torch.Tensor]:
            with torch.no_grad():
                model, critic = learners.model.eval(), parts.critic_learner
                return [model.step(s, a, z), cost(s, a, s + 0.1), parts.policy(s),
                        parts.critic(s), critic.value(s)]  # fmt: skip

        before = outputs()
        real(learners, store)
        for got, want in zip(outputs(), before, strict=True):
            assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
        costs = CostStats.of(store)
        assert cost.cost_mean.item() == pytest.approx(costs.cost_mean)
        assert cost.cost_std.item() == pytest.approx(costs.cost_std)
        calls.append(1)

    monkeypatch.setattr(agents.app.loop, "renormalize", checked)
    _final(tmp_path, "--loop.renormalize")
    assert len(calls) == 2  # after each of the two episodes past the seed steps
