"""The memory a config needs, estimated from its sizes, against the memory the machine has.

A batch size of ten million is a valid integer, but training on it would take terabytes: the
run would swap, be killed by the kernel, or fail with an out-of-memory traceback minutes in. The
estimate is an upper bound of the largest tensors (weights and optimiser state, the activations a
backward pass keeps, the planner's and the policy's imagined rollouts, the replay data), each the
product of the options it grows with, so a config that fits is never refused and the one line
names the option to lower.
"""

from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from agents.configurator.config import Config
from envs import Task
from worldmodel.errors import ConfigError

FLOAT = 4  #: bytes of a float32
ACTIVATIONS_PER_LAYER = 6
"""Tensors a hidden layer keeps for backward (linear out, norm out and statistics, SiLU out,
dropout mask), each [..., hidden]."""
OPTIMISER_COPIES = 4  #: weights, gradients and Adam's two moments
DATA_COPIES = 3  #: the arrays, the npz written from them, and a sampled batch's copy
ENV_BYTES = 16 * 2**20
"""An upper bound of one env's memory (a MuJoCo model and its data, the wrappers' buffers)."""
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


@dataclass(frozen=True)
class Need:
    """One part of the memory a run needs."""

    what: str  #: what it is for, e.g. 'training'
    bytes: int  #: its estimated size
    options: tuple[str, ...]  #: the options (config keys) it grows with, in a product
    on_device: bool = True  #: on the run's device (else in the host's memory)


def memory_needs(config: Config, task: Task, command: str) -> list[Need]:
    """The large allocations of `command` ('train' or 'run') under `config` for `task`."""
    m, obs, act = config.model, task.obs_dim, task.act_dim
    members = m.members if m.kind == "ensemble" else 1
    latent = m.latent_dim if m.kind == "cvae" else 0
    width = (obs + act + latent + 2 * obs + act + 2 * latent + m.layers * m.hidden) * m.hidden
    per_layer = m.hidden * m.layers * members * FLOAT * ACTIVATIONS_PER_LAYER
    model_keys = ("model.hidden", "model.layers")
    needs = [
        Need("the model", width * members * FLOAT * OPTIMISER_COPIES, model_keys),
        Need(
            "training",
            config.train.batch_size * config.train.horizon * per_layer,
            ("train.batch_size", "train.horizon", *model_keys),
        ),
    ]
    transitions = config.steps if command == "train" else min(config.steps, config.loop.capacity)
    data_keys = ("steps",) if command == "train" else ("steps", "loop.capacity")
    per_transition = (2 * obs + act + 4) * 8 * DATA_COPIES
    needs.append(Need("the data", transitions * per_transition, data_keys, on_device=False))
    if command == "run":
        needs += _acting_needs(config, per_layer)
        key = "envs" if config.envs >= config.loop.eval_envs else "loop.eval_envs"
        envs = config.envs + config.loop.eval_envs
        needs.append(Need("the envs", envs * ENV_BYTES, (key,), on_device=False))
    return needs


def _acting_needs(config: Config, per_layer: int) -> list[Need]:
    """The planner's and the policy's imagined rollouts in `wm run`."""
    p, pc = config.planner, config.policy
    needs = []
    if config.agent != "policy":
        sampled = p.population if p.kind in ("cem", "mppi", "hybrid") else 0
        refined = p.candidates if p.kind in ("gradient", "hybrid") else 0
        key = "planner.population" if sampled >= refined else "planner.candidates"
        side_by_side = max(config.envs, config.loop.eval_envs)  # planned for in one call
        rollouts = (sampled + refined) * p.latent_samples * p.horizon * side_by_side
        envs_key = "envs" if config.envs >= config.loop.eval_envs else "loop.eval_envs"
        keys = (key, "planner.latent_samples", "planner.horizon", envs_key, "model.hidden")
        needs.append(Need("planning", rollouts * per_layer, keys))
    if config.agent != "mpc":
        rollouts = pc.batch_size * pc.latent_samples * pc.horizon * (1 + pc.uncertainty_masks)
        keys = ("policy.batch_size", "policy.latent_samples", "policy.horizon", "model.hidden")
        needs.append(Need("the policy's updates", rollouts * per_layer, keys))
    return needs


def machine_memory(device: torch.device) -> int:
    """Bytes of memory on `device`: a GPU's own, else the host's (within a cgroup's limit)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory)
    return host_memory()


def host_memory() -> int:
    """Physical memory of the machine, or the container's limit if that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in _CGROUP_LIMITS:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def check_memory(config: Config, task: Task, command: str, device: torch.device) -> None:
    """A one-line `ConfigError` if `config`'s estimated memory exceeds what the machine has."""
    needs = memory_needs(config, task, command)
    pools = {True: machine_memory(device), False: host_memory()}
    if device.type == "cpu":  # one pool: the device's memory is the host's
        needs = [Need(n.what, n.bytes, n.options, on_device=True) for n in needs]
    for on_device, available in pools.items():
        part = [n for n in needs if n.on_device == on_device]
        total = sum(n.bytes for n in part)
        if total <= available:
            continue
        big = max(part, key=operator.attrgetter("bytes"))
        key = _most_raised(config, big.options)
        where = f"{device} has" if on_device and device.type != "cpu" else "this machine has"
        raise ConfigError(
            f"{key} {operator.attrgetter(key)(config)} needs about {_size(total)} of memory "
            f"({_size(big.bytes)} for {big.what}: {' x '.join(big.options)}), more than the "
            f"{_size(available)} {where}; lower --{key.replace('_', '-')}"
        )


def _most_raised(config: Config, keys: tuple[str, ...]) -> str:
    """The key among `keys` whose value is the most times its default: the one to lower."""
    defaults = Config()

    def ratio(key: str) -> float:
        value, default = (operator.attrgetter(key)(c) for c in (config, defaults))
        return value / max(default, 1)

    return max(keys, key=ratio)


def _size(n: int) -> str:
    """Bytes for a person: '3.7 TB'."""
    exponent = min(int(math.log(max(n, 1), 1000)), 6)
    unit = ("B", "kB", "MB", "GB", "TB", "PB", "EB")[exponent]
    return f"{n / 1000**exponent:.1f} {unit}"
