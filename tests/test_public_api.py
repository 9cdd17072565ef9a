"""The public API: what `import worldmodel` and `import agents` export and what they leave be."""

import json
import os
import subprocess
import sys

import agents
import worldmodel

HEAVY = ("tensorboard", "matplotlib", "envs.render", "mujoco", "agents.app", "PIL")


def test_every_exported_name_exists() -> None:
    for package in (worldmodel, agents):
        missing = [name for name in package.__all__ if not hasattr(package, name)]
        assert not missing, (package.__name__, missing)
        assert len(package.__all__) == len(set(package.__all__))


def _imported_after(statement: str) -> dict:
    """sys.modules and the environment after `statement`, in a fresh interpreter."""
    probe = (
        f"import os, sys, json; before = dict(os.environ); {statement}; "
        "print(json.dumps({'modules': sorted(sys.modules), "
        "'env': sorted(k for k in os.environ if os.environ.get(k) != before.get(k))}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout)


def test_importing_the_modules_loads_no_media_registers_nothing_and_sets_nothing() -> None:
    after = _imported_after("import worldmodel")
    heavy = [m for m in after["modules"] if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]
    assert not heavy and after["env"] == [], (heavy, after["env"])
    # One interpreter for the rest: each start imports torch, seconds of CI time.
    statement = (
        "import gymnasium as gym, sys, agents; "
        f"heavy = [m for m in sys.modules if m.startswith({HEAVY!r})]; "
        "assert not heavy, heavy; "
        "import agents.app.dream as d; "
        "assert d.DREAM_ID not in gym.registry; d.register_dream_env(); "
        "assert d.DREAM_ID in gym.registry"
    )
    assert _imported_after(statement)["env"] == []
