"""`loop.renormalize`: a run's learners end normalised by all the data it collected (not by its
random seed steps), and the run goes on from the renormalised nets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_run import TINY_LOOP

from agents.app.cli import main
from agents.app.runs.folder import CHECKPOINT_FILE
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
