"""Checks of a whole config before anything is written: field types, ranges every field of a
kind shares, rules across fields, the device, and (`capacity.py`) the memory it needs.

The type and range checks walk the config dataclasses' fields and type hints, so a field added to
`config.py` is covered without a line here; the rules between fields are listed one by one.
Every failure is a one-line `ConfigError` naming the option and how to fix it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from typing import Any

import torch

from agents.configurator.capacity import check_memory
from agents.configurator.config import Config
from agents.configurator.fields import from_dict
from envs import Task
from worldmodel.errors import ConfigError

SEED_MAX = 2**32 - 1
"""Largest seed: numpy's legacy seeding (and the libraries built on it) take 0..2**32-1."""
INT_MAX = 2**63 - 1
"""Largest integer option: torch and numpy hold sizes and counts in 64-bit integers."""
_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def option(key: str) -> str:
    """The command-line spelling of config key `key` ('loop.seed_steps' -> 'loop.seed-steps')."""
    return key.replace("_", "-")


# --- a config from JSON (config.json, a checkpoint's meta) ----------------------------------------


LEGACY_VALUES = {"train.lr_final": 1.0, "train.ema_decay": 0.0, "model.prior_components": 0}
"""Options added with a default that changes what a run does: a saved config without one was
run before it existed, as this value (fits then trained at a constant rate and kept their own
weights, not an average; z's prior was N(0, I)), and resumes so."""


def with_legacy_values(values: object) -> object:
    """`values` (a saved config) with `LEGACY_VALUES` where its group lacks the key."""
    if not isinstance(values, dict):
        return values
    out = dict(values)
    for dotted, value in LEGACY_VALUES.items():
        group, name = dotted.split(".")
        if isinstance(out.get(group), dict) and name not in out[group]:
            out[group] = out[group] | {name: value}
    return out


def config_from_json(values: object) -> Config:
    """The `Config` of parsed JSON, every value of its field's type: a wrong type is a one-line
    `ConfigError` naming the key (from_dict alone would build a config holding a string for a
    size, and fail later with a TypeError deep in the run). Missing keys take their defaults,
    except those of `LEGACY_VALUES`."""
    return from_dict(Config, typed_values(Config, with_legacy_values(values)))


def typed_values(cls: type, values: object, prefix: str = "") -> dict[str, Any]:
    """`values` checked against the fields of dataclass `cls` and their type hints; ints given
    for float fields become floats (JSON writes 1.0 as 1 when edited by hand)."""
    if not isinstance(values, dict):
        where = prefix.rstrip(".") or "the config"
        raise ConfigError(f"{where} must be a JSON object, got {_shown(values)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]}")
    out: dict[str, Any] = {}
    for name, value in values.items():
        kind, key = hints[name], prefix + name
        if dataclasses.is_dataclass(kind):
            out[name] = typed_values(kind, value, key + ".")
        else:
            out[name] = typed_value(kind, value, key)
    return out


def typed_value(kind: Any, value: object, key: str) -> object:
    """`value` as a `kind` (a plain type, a Literal or a Union of them), or a `ConfigError`."""
    if typing.get_origin(kind) is typing.Literal:
        if value in typing.get_args(kind):
            return value
        raise ConfigError(f"{key} must be one of {typing.get_args(kind)}, got {_shown(value)}")
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        for arm in typing.get_args(kind):
            try:
                return typed_value(arm, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {kind}, got {_shown(value)}")
    if kind is type(None):
        if value is None:
            return value
    elif kind is float and _is_number(value):
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")
        return float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind in (bool, str) and isinstance(value, kind):
        return value
    elif kind not in _KINDS:
        return value  # a type this check does not know: the field's own checks judge it
    raise ConfigError(f"{key} must be {_KINDS.get(kind, kind)}, got {_shown(value)}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """A value as JSON would show it, cut short: what a message quotes of a hand-edited file."""
    text = "null" if value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- a whole config, before a run starts ----------------------------------------------------------


def check_config(config: Config, task: Task, command: str) -> None:
    """Every check of a config that can run before anything is written (`command`: 'train' or
    'run'): ranges per field kind, rules between fields, the device, the memory it needs."""
    check_field_ranges(config)
    check_seed(config.seed, "seed")
    check_threads(config.threads)
    check_rules(config, command)
    device = usable_device(config.device)
    check_memory(config, task, command, device)


def check_field_ranges(config: object, prefix: str = "") -> None:
    """Ranges every field of a kind has: integers fit in 64 bits, floats are finite."""
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value, key = getattr(config, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_field_ranges(value, key + ".")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX:
            raise ConfigError(
                f"{key} {value} does not fit in a 64-bit integer; pass a smaller --{option(key)}"
            )
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"{key} must be a finite number, got {value}; pass a finite --{option(key)}"
            )


def check_seed(seed: int, name: str = "seed") -> None:
    """A seed every library takes: 0..2**32-1 (gymnasium refuses negative ones with a
    traceback, numpy's legacy seeding larger ones)."""
    if not 0 <= seed <= SEED_MAX:
        raise ConfigError(
            f"{name} {seed} is out of range; pass a --{option(name)} in 0..{SEED_MAX}"
        )


def check_threads(threads: int) -> None:
    """At most one torch thread per CPU of the machine: more only fight over the cores (and a
    huge count makes OpenMP try to start that many threads)."""
    cores = os.cpu_count() or 1
    if threads > cores:
        raise ConfigError(
            f"threads {threads} is more than the {cores} CPU cores of this machine; pass "
            f"--threads {cores} or fewer (0: one per core this process may use)"
        )


def check_rules(config: Config, command: str) -> None:
    """The rules between fields that the fields' own checks cannot see."""
    planner = config.planner
    if planner.kind in ("cem", "hybrid") and planner.elites > planner.population:
        raise ConfigError(
            f"planner.elites {planner.elites} is more than planner.population "
            f"{planner.population}, the sequences they are chosen from; lower --planner.elites "
            "or raise --planner.population"
        )
    if command == "run" and config.loop.seed_steps > config.steps:
        raise ConfigError(
            f"loop.seed_steps {config.loop.seed_steps} exceeds the budget {config.steps}; "
            "lower --loop.seed-steps or raise --steps"
        )


# --- the device -----------------------------------------------------------------------------------


def usable_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else must be a device this machine has
    and torch can compute on (one small tensor is made there and read back)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "meta":
        raise ConfigError(
            f"device '{name}' holds shapes but no values, so nothing can run on it; use "
            "--device cpu, cuda or cuda:N"
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device '{name}' asked for but CUDA is not available; use --device cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device '{name}' asked for but this machine has {count} CUDA device(s), "
                f"cuda:0..cuda:{count - 1}; pass one of them"
            )
    if device.type != "cpu":
        _probe(device, name)
    return device


def _probe(device: torch.device, name: str) -> None:
    """A tiny computation on `device`: torch names device types it was not built for (mps, xpu,
    ...) without checking them, and fails only on first use, deep inside a run."""
    try:
        (torch.ones(1, device=device) + 1).cpu()
    except Exception as exc:  # whatever the backend raises: the device is not usable
        reason = " ".join(str(exc).split()).split(". ")[0][:120] or type(exc).__name__
        raise ConfigError(
            f"device '{name}' cannot be used on this machine ({reason}); use --device cpu"
        ) from exc
