"""The README's quick start runs as written, at a smaller size."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).parents[1] / "README.md"
# Each replacement must match the README's text: a changed example fails here, not silently.
SMALLER = {
    "steps=2000": "steps=300",
    "FitSchedule(max_steps=1000)": "FitSchedule(max_steps=20, eval_every=10)",
    "GradientPlanner(30,": "GradientPlanner(5,",
    "for i in range(3)]": "for i in range(1)]",
    'make_task("Pendulum-v1")': 'make_task("InvertedPendulum-v5")',
}


def quick_start() -> str:
    section = README.read_text().split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_start_is_short_and_runs(capsys) -> None:
    code = quick_start()
    assert len(code.strip().splitlines()) <= 20
    for before, after in SMALLER.items():
        assert before in code, f"the README example no longer has {before!r}"
        code = code.replace(before, after)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102
    returns = namespace["returns"]
    assert len(returns) == 1 and np.isfinite(returns).all()
    # InvertedPendulum pays +1 per step until the pole falls: a real episode ran and ended.
    assert 1 <= returns[0] <= 1000
    assert str(returns[0])[:5] in capsys.readouterr().out
