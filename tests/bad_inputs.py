"""Ways to break a run folder, tasks a world model cannot use, and API calls with bad input:
the rows of the bad-input table in test_bad_input.py."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

import worldmodel.io.checkpoint
from agents.app.runs.folder import CHECKPOINT_FILE, CONFIG_FILE, DATA_FILE
from agents.app.runs.lock import run_folder_lock
from agents.mpc import MPCAgent
from agents.planners import GradientPlanner
from agents.policy import Policy, PolicyAgent
from envs import costs, tasks
from worldmodel.data.store import EpisodeStore
from worldmodel.forward.model import ForwardModel
from worldmodel.io.checkpoint import load_checkpoint, save_checkpoint
from worldmodel.perception import Perception

# --- ways to break a run folder ----------------------------------------------------------------


def truncate(name: str) -> Callable[[Path], None]:
    def mutate(run: Path) -> None:
        payload = (run / name).read_bytes()
        (run / name).write_bytes(payload[: len(payload) // 2])

    return mutate


def garbage(name: str) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(b"\x00\x01not a real file" * 64)


def resave_checkpoint(edit: Callable[[dict, dict], None]) -> Callable[[Path], None]:
    def mutate(run: Path) -> None:
        groups, meta = load_checkpoint(run / CHECKPOINT_FILE)
        edit(groups, meta)
        save_checkpoint(run / CHECKPOINT_FILE, groups, meta)

    return mutate


def other_task(groups: dict, meta: dict) -> None:
    # A Reacher checkpoint (consistent in itself) dropped into a Pendulum run folder.
    meta.update(task="Reacher-v5", obs_dim=10, act_dim=2)
    meta["config"]["env"] = "Reacher-v5"


def nan_weights(groups: dict, meta: dict) -> None:
    groups["model"]["decoder.0.weight"][0, 0] = float("nan")


def nan_optimizer_state(groups: dict, meta: dict) -> None:
    groups["optim_model"]["0.exp_avg"].view(-1)[0] = float("nan")


HELD_LOCKS = contextlib.ExitStack()
"""Run-folder locks taken by `hold_lock`; test_bad_input.py releases them after each row."""


def hold_lock(run: Path) -> None:
    """As if another `wm run` were writing to `run`: its lock is held (a flock conflicts with
    another open of the same file, in this process too)."""
    HELD_LOCKS.enter_context(run_folder_lock(run))


def no_tensorboard(_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agents.app.media.inspection.tensorboard_installed", lambda: False)


def newer_checkpoint(run: Path) -> None:
    groups, meta = load_checkpoint(run / CHECKPOINT_FILE)
    flat = {f"{g}/{k}": v for g, tensors in groups.items() for k, v in tensors.items()}
    header = {"format_version": "99", "meta": json.dumps(meta)}
    (run / CHECKPOINT_FILE).write_bytes(st_save(flat, metadata=header))


def edit_data(edit: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    def mutate(run: Path) -> None:
        with np.load(run / DATA_FILE) as npz:
            arrays = {k: npz[k] for k in npz.files}
        edit(arrays)
        with (run / DATA_FILE).open("wb") as f:
            np.savez_compressed(f, **arrays)

    return mutate


def nan_obs(arrays: dict[str, np.ndarray]) -> None:
    arrays["obs"][7, 1] = np.nan


def newer_data(arrays: dict[str, np.ndarray]) -> None:
    arrays["_meta"][0] = 99


def other_dims_data(run: Path) -> None:
    store = EpisodeStore(10, 2)
    n, no = 20, np.zeros(20, bool)
    store.add_episode(np.zeros((n, 10)), np.zeros((n, 2)), np.zeros(n), np.zeros((n, 10)), no, no)
    (run / DATA_FILE).unlink()
    store.save(run / DATA_FILE)


def thousand_run_folders(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agents.app.runs.folder.time.strftime", lambda _fmt: "20250101-000000")
    base = "Pendulum-v1__train__0__20250101-000000"
    for i in range(1000):
        (runs / (base + (f"-{i}" if i else ""))).mkdir(parents=True)


# --- tasks whose spaces a world model cannot use -----------------------------------------------


def discrete_task() -> tasks.Task:
    with tasks._probe("CartPole-v1", {}) as env:
        return tasks._task(env, {}, "discrete actions", costs.pendulum_cost)


class UnboundedActions(gym.ActionWrapper):
    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        return action


def unbounded_task() -> tasks.Task:
    with tasks._probe("Pendulum-v1", {}) as env:
        return tasks._task(UnboundedActions(env), {}, "unbounded", costs.pendulum_cost)


def fake_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tasks.TASKS, "CartPole-v1", discrete_task)
    monkeypatch.setitem(tasks.TASKS, "UnboundedPendulum-v1", unbounded_task)


# --- API entry points --------------------------------------------------------------------------


def mpc_agent() -> MPCAgent:
    model = ForwardModel(3, 1, hidden=16, layers=1)
    planner = GradientPlanner(3, -1.0, 1.0, action_dim=1, iterations=2, candidates=2)
    return MPCAgent(model, Perception(3), tasks.make_task("Pendulum-v1").planning_cost, planner)


def mpc_wrong_obs_shape() -> None:
    mpc_agent().act(np.zeros(5, np.float32))


def mpc_nan_obs() -> None:
    mpc_agent().act(np.array([0.0, np.nan, 1.0], np.float32))


def policy_wrong_obs_shape() -> None:
    PolicyAgent(Policy(3, 1)).act(np.zeros(4, np.float32))


def policy_inf_obs() -> None:
    PolicyAgent(Policy(3, 1)).act(np.array([0.0, np.inf, 1.0], np.float32))


def model_wrong_action_shape() -> None:
    ForwardModel(3, 1, hidden=16).step(torch.zeros(8, 3), torch.zeros(8, 2))


def rollout_wrong_action_shape() -> None:
    ForwardModel(3, 1, hidden=16).rollout(torch.zeros(8, 3), torch.zeros(5, 8, 6))


def store_nan_episode() -> None:
    n, no = 4, np.zeros(4, bool)
    obs = np.ones((n, 3))
    obs[2, 0] = np.inf
    EpisodeStore(3, 1).add_episode(obs, np.zeros((n, 1)), np.zeros(n), obs, no, no)


def store_zero_capacity() -> None:
    EpisodeStore(3, 1, capacity=0)


# --- gymnasium envs that cannot be tasks (any env id, issue 18) --------------------------------


def _unbounded_pendulum() -> gym.Env:
    return UnboundedActions(gym.make("Pendulum-v1"))


def gym_unbounded_env(_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gymnasium env (not in TASKS) whose actions are an unbounded Box."""
    spec = gym.envs.registration.EnvSpec(
        "UnboundedPendulum-v0", entry_point=_unbounded_pendulum, max_episode_steps=200
    )
    monkeypatch.setitem(gym.registry, "UnboundedPendulum-v0", spec)


def module_raising_on_import(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user module `wm_broken_envs` (beside, not in, the runs folder) that raises when
    imported."""
    import sys

    (runs.parent / "wm_broken_envs.py").write_text("raise RuntimeError('no licence found')\n")
    monkeypatch.syspath_prepend(str(runs.parent))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delitem(sys.modules, "wm_broken_envs", raising=False)


def gym_env_failing_to_make(_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gymnasium env whose constructor fails (a missing shared library)."""

    def broken() -> gym.Env:
        raise OSError("libfoo.so: cannot open shared object file")

    spec = gym.envs.registration.EnvSpec("Broken-v0", entry_point=broken, max_episode_steps=10)
    monkeypatch.setitem(gym.registry, "Broken-v0", spec)


def no_dm_control(_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As if shimmy and dm_control were not installed (and no dm_control task built yet)."""
    from envs import registry

    monkeypatch.setattr("envs.dmc.available", lambda: False)
    registry._build.cache_clear()


# --- hand-edited or damaged config.json, and files that cannot be read (issue 20) -------------


def edit_config(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """A config.json edited by hand: `edit` changes its parsed JSON in place."""

    def mutate(run: Path) -> None:
        tree = json.loads((run / CONFIG_FILE).read_text())
        edit(tree)
        (run / CONFIG_FILE).write_text(json.dumps(tree, indent=2))

    return mutate


def config_text(text: str | bytes) -> Callable[[Path], None]:
    payload = text.encode() if isinstance(text, str) else text
    return lambda run: (run / CONFIG_FILE).write_bytes(payload)


def not_utf8(run: Path) -> None:
    (run / CONFIG_FILE).write_bytes(
        (run / CONFIG_FILE).read_bytes().replace(b"Pendulum", b"P\xffn")
    )


def fast_lr(tree: dict) -> None:
    tree["train"]["lr"] = "fast"


def cem_elites_over_population(tree: dict) -> None:
    tree["planner"].update(kind="cem", population=10, elites=50)


def as_folder(name: str) -> Callable[[Path], None]:
    def mutate(run: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()

    return mutate


def deflate_damage(run: Path) -> None:
    """data.npz whose 'obs' member has a compressed stream that zlib refuses (its first byte
    names the reserved block type), inside a zip archive that is whole."""
    path = run / DATA_FILE
    payload = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo("obs.npy").header_offset
    name_length, extra_length = struct.unpack("<HH", payload[offset + 26 : offset + 30])
    payload[offset + 30 + name_length + extra_length] = 0xFF
    path.write_bytes(bytes(payload))


def broken_counter(groups: dict, meta: dict) -> None:
    meta["train"]["counters"]["total_steps"] = -1


def unreadable(name: str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """`name` cannot be read by the checkpoint loader (no permission): as root, chmod would not
    stop the read, so the loader's paths refuse it (the test's own snapshots still read it)."""

    class Unreadable(type(Path())):  # type: ignore[misc]
        def read_bytes(self) -> bytes:
            if self.name == name:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return super().read_bytes()

    def prepare(_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(worldmodel.io.checkpoint, "Path", Unreadable)

    return prepare


def read_only_run(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run folder (the table's '{run}', beside `runs`) on a read-only file system."""
    real, run = os.makedirs, str(runs.parent / "run")

    def makedirs(path: object, *args: object, **kwargs: object) -> None:
        if str(path).startswith(run):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        real(path, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", makedirs)
