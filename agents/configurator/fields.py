"""Config dataclasses as nested dicts and back, and `{"group.field": value}` overrides.

A config goes to JSON and back unchanged (`to_dict` / `from_dict`), and an override reaches the
field it names, its type checked (`with_overrides`).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from worldmodel.errors import ConfigError


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (JSON-able)."""
    return dataclasses.asdict(config)


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build `cls` from a (possibly partial) nested dict; unknown keys are an error."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        kwargs[name] = from_dict(kind, value) if dataclasses.is_dataclass(kind) else value
    return cls(**kwargs)


def flat_fields(cls: type, prefix: str = "") -> dict[str, type]:
    """'group.field' -> type of every leaf field of a config dataclass."""
    out: dict[str, type] = {}
    for name, kind in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(kind):
            out |= flat_fields(kind, f"{prefix}{name}.")
        else:
            out[f"{prefix}{name}"] = kind
    return out


def with_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of `config` with 'group.field' keys replaced; types are checked."""
    fields = flat_fields(type(config))
    values = to_dict(config)
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"unknown option '{key}'; see --help for the options")
        kind = fields[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind):
            raise ConfigError(f"option '{key}' needs a {kind.__name__}, got {value!r}")
        node = values
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return from_dict(type(config), values)
