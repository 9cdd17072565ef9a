"""Checkpoints: tensors in safetensors, everything else as JSON in its header; never pickle.

One file holds named groups of tensors (`model`, `optimizer`, ...) and a JSON `meta` dict (config,
counters, RNG states). It is written atomically, so a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from worldmodel.errors import CheckpointError
from worldmodel.io.atomic import atomic_write_bytes

FORMAT_VERSION = 1
_SEP = "/"


def save_checkpoint(
    path: str | os.PathLike, groups: dict[str, dict[str, Tensor]], meta: dict[str, Any]
) -> None:
    """Write `groups` (name -> flat tensor dict) and JSON-able `meta` to `path` atomically."""
    flat = {
        f"{group}{_SEP}{key}": tensor.detach().to("cpu").contiguous()
        for group, tensors in groups.items()
        for key, tensor in tensors.items()
    }
    header = {"format_version": str(FORMAT_VERSION), "meta": json.dumps(meta)}
    atomic_write_bytes(Path(path), st_save(flat, metadata=header))


def load_checkpoint(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
    """Read a checkpoint written by `save_checkpoint`; every failure is a `CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is a folder, not a file; move it away and restore the checkpoint"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a run folder with one")
    payload = path.read_bytes()
    try:
        flat = st_load(payload)
        header = _header(payload)
        version = int(header.get("format_version", "0"))
        meta = json.loads(header["meta"])
        if not isinstance(meta, dict):
            raise ValueError("meta is not a JSON object")
    except (SafetensorError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({exc}); restore it from a copy or "
            "train again"
        ) from exc
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {version}, newer than {FORMAT_VERSION}; "
            "upgrade worldmodel"
        )
    groups: dict[str, dict[str, Tensor]] = {}
    for name, tensor in flat.items():
        if _SEP not in name:
            raise CheckpointError(
                f"checkpoint {path} has a tensor '{name}' outside any group; it was not written "
                "by worldmodel"
            )
        group, key = name.split(_SEP, 1)
        groups.setdefault(group, {})[key] = tensor.to(device)
    return groups, meta


def _header(payload: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors payload (which `safetensors.torch.load` drops)."""
    size = int.from_bytes(payload[:8], "little")
    if size <= 0 or 8 + size > len(payload):
        raise ValueError("header length out of range")
    return json.loads(payload[8 : 8 + size])["__metadata__"]


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimiser's state_dict into flat tensors and JSON (its param groups and scalars)."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, Tensor],
    meta: dict[str, Any],
    what: str = "optimiser",
) -> None:
    """Inverse of `optimizer_state`; NaN or inf in its tensors (Adam's moments) is a one-line
    `CheckpointError`, as in weights: resuming from them would make every update NaN."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(
                f"{what} state '{name}' has NaN or inf values; the checkpoint was saved from a "
                "diverged run: start a new run (lower --train.lr)"
            )
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def load_module_state(module: torch.nn.Module, tensors: dict[str, Tensor], what: str) -> None:
    """`load_state_dict` that reports a shape or key mismatch as one clear line."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{what} weights do not match this model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); was the checkpoint made with another config?"
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f"{what} weight '{key}' has shape {tuple(value.shape)} but this model expects "
                f"{tuple(expected[key].shape)}; the checkpoint is for other dimensions"
            )
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(
                f"{what} weight '{key}' has NaN or inf values; the checkpoint was saved from a "
                "diverged model: train again (lower --train.lr)"
            )
    module.load_state_dict(tensors)


def global_rng_state() -> dict[str, Tensor]:
    """torch's global RNG state (CPU, and each CUDA device's once CUDA is in use), as uint8
    tensors: dropout draws from these, not from the generators a component owns."""
    states = {"torch_global": torch.get_rng_state()}
    # Asking for CUDA states would start CUDA in a process that never used it (a CPU run).
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states |= {f"torch_cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return states


def load_global_rng_state(states: dict[str, Tensor]) -> None:
    """Inverse of `global_rng_state`; CUDA states are skipped where CUDA is not available, and
    those of devices this machine does not have are dropped."""
    torch.set_rng_state(states["torch_global"].cpu())
    if not torch.cuda.is_available():
        return
    for key, state in states.items():
        name, _, index = key.partition(".")
        if name == "torch_cuda" and int(index) < torch.cuda.device_count():
            torch.cuda.set_rng_state(state.cpu(), int(index))
