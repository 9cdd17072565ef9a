"""benchmarks.mutation_report: mutmut's result lines -> per-module scores and the survivors page."""

from __future__ import annotations

import pytest

from benchmarks.mutation_report import (
    BEGIN,
    END,
    changed_lines,
    function_name,
    module_path,
    mutant_diff,
    replace_block,
    score_table,
    source_line,
    statuses,
    survivors_page,
)

RESULTS = """
    agents.planners.sampling.xǁCEMǁplan__mutmut_1: killed
    agents.planners.sampling.xǁCEMǁplan__mutmut_2: survived
    agents.planners.sampling.x_colored_noise__mutmut_7: timeout
    agents.planners.sampling.x_colored_noise__mutmut_8: killed
    envs.costs.x_pendulum_cost__mutmut_3: not checked
"""


def test_names_map_to_file_and_function() -> None:
    assert (
        module_path("agents.planners.sampling.xǁCEMǁplan__mutmut_2")
        == "agents/planners/sampling.py"
    )
    assert function_name("agents.planners.sampling.xǁCEMǁplan__mutmut_2") == "CEM.plan"
    assert module_path("envs.costs.x_pendulum_cost__mutmut_3") == "envs/costs.py"
    assert function_name("envs.costs.x_pendulum_cost__mutmut_3") == "pendulum_cost"


def test_scores_count_only_killed_mutants() -> None:
    table = score_table(statuses(RESULTS)).splitlines()
    assert table[2] == "| `agents/planners/sampling.py` | 4 | 2 | 1 | 1 | 0 | 50.0% |"
    assert table[3] == "| `envs/costs.py` | 1 | 0 | 0 | 0 | 1 | 0.0% |"
    assert table[4] == "| all | 5 | 2 | 1 | 1 | 1 | 40.0% |"


def test_survivors_page_lists_every_mutant_not_killed_with_its_change() -> None:
    diff = "--- a\n+++ b\n@@\n-    return x | y\n+    return x & y\n"
    page = survivors_page(statuses(RESULTS), lambda name: diff)
    rows = [line for line in page.splitlines() if line.startswith("| ?")]
    # "not checked" mutants were never run: counted in the scores, not listed.
    assert [row.split(" | ")[2] for row in rows] == ["7", "2"]
    assert rows[1] == "| ? | `CEM.plan` | 2 | survived | `return x \\| y` | `return x & y` |"


def test_block_between_markers_is_replaced_and_the_rest_kept() -> None:
    page = f"intro\n{BEGIN}\nold table\n{END}\nrest\n"
    assert replace_block(page, "new") == f"intro\n{BEGIN}\nnew\n{END}\nrest\n"
    with pytest.raises(SystemExit, match="markers"):
        replace_block("no markers", "new")


def test_mutant_diff_compares_the_mutant_with_its_original_in_mutmuts_copy(tmp_path) -> None:
    copy = tmp_path / "pkg" / "mod.py"
    copy.parent.mkdir()
    copy.write_text(
        "def x_f__mutmut_orig(a):\n    return a + 1\n\n"
        "def x_f__mutmut_1(a):\n    return a - 1\n\n"
        "class C:\n"
        "    def xǁCǁg__mutmut_orig(self):\n        return 2\n"
        "    def xǁCǁg__mutmut_1(self):\n        return 3\n"
    )
    assert changed_lines(mutant_diff("pkg.mod.x_f__mutmut_1", tmp_path)) == (
        "return a + 1",
        "return a - 1",
    )
    assert changed_lines(mutant_diff("pkg.mod.xǁCǁg__mutmut_1", tmp_path)) == (
        "return 2",
        "return 3",
    )


def test_source_line_finds_the_changed_line_inside_the_named_function(tmp_path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    return 1\n\nclass C:\n    def g(self):\n        return 1\n")
    assert source_line(source, "f", "return 1") == 2
    assert source_line(source, "C.g", "return 1") == 6
    assert source_line(source, "C.h", "return 1") is None
    assert source_line(source, "f", "return 2") is None
