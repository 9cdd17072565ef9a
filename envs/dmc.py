"""DeepMind Control Suite tasks as gymnasium envs through shimmy: ``dm_control/<domain>-<task>-v0``.

Their rewards are not written in torch, so runs learn them (and they never terminate: episodes
end at their 1000-step time limit). Ids such as ``dm_control/cartpole-swingup-v0``,
``dm_control/reacher-easy-v0``, ``dm_control/cheetah-run-v0``, ``dm_control/walker-walk-v0``.

Compatibility: dm_control 1.0.50 indexes every MjModel/MjData array it knows of when it builds
a physics, and MuJoCo 4 removed some of them (``flex_vertedge``, ``flexvert_J``, ...), so
``suite.load`` fails with an AttributeError. `register` drops the names this MuJoCo lacks from
dm_control's table of array sizes before any physics is built (`drop_missing_fields`). Those
arrays belong to flexible bodies, which none of the suite's tasks has; nothing else changes.
The shim is applied only when a dm_control id goes through here, never at import.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from worldmodel.errors import WorldModelError

PREFIX = "dm_control/"
SUITE = (
    "dm_control/cartpole-swingup-v0",
    "dm_control/reacher-easy-v0",
    "dm_control/cheetah-run-v0",
    "dm_control/walker-walk-v0",
)
"""The suite's tasks checked here (tests/envs/test_dmc.py); the others load the same way."""


class DmControlUnavailableError(WorldModelError, ValueError):
    """dm_control or shimmy is not installed."""


def is_dm_control(env_id: str) -> bool:
    """Whether `env_id` names a DeepMind Control task."""
    return env_id.startswith(PREFIX)


def available() -> bool:
    """Whether shimmy and dm_control are installed (they are an optional dependency)."""
    return all(importlib.util.find_spec(m) is not None for m in ("shimmy", "dm_control"))


def drop_missing_fields() -> dict[str, list[str]]:
    """Remove from dm_control's array-size table the MjModel/MjData fields this MuJoCo lacks;
    returns them by struct (empty where the versions agree). Idempotent."""
    import mujoco
    from dm_control.mujoco.wrapper.mjbindings import sizes

    model = mujoco.MjModel.from_xml_string("<mujoco/>")
    structs = {"mjmodel": model, "mjdata": mujoco.MjData(model)}
    dropped = {}
    for name, struct in structs.items():
        table = sizes.array_sizes[name]
        dropped[name] = [field for field in table if not hasattr(struct, field)]
        for field in dropped[name]:
            del table[field]
    return dropped


def register() -> None:
    """Register the suite's ids with gymnasium (importing shimmy), after the compatibility
    shim; headless rendering is chosen first, as dm_control picks its GL backend on import."""
    if not available():
        raise DmControlUnavailableError(
            "DeepMind Control tasks need dm_control and shimmy, which are not installed; "
            "pip install 'shimmy[dm-control]'"
        )
    from envs.render import use_headless_gl  # envs.render builds on the task registry

    use_headless_gl()
    drop_missing_fields()
    import shimmy  # noqa: F401  (registers the dm_control/ ids with gymnasium)


def control_timestep(unwrapped: Any) -> float | None:
    """Seconds per step of a shimmy-wrapped dm_control env, or None for any other env."""
    inner = getattr(unwrapped, "_env", None)
    step = getattr(inner, "control_timestep", None)
    return float(step()) if callable(step) else None
