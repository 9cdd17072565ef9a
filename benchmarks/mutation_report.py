"""Mutation report: per-module scores and every mutant not killed, from the last `mutmut run`.

    rm -rf mutants && mutmut run --max-children 2   # the run (docs/testing.md)
    python -m benchmarks.mutation_report            # then this, in the same folder

Reads `mutmut results --all true` (one `name: status` line per mutant) and, for the mutants not
killed, the diff of each against the original function in `mutants/` (what `mutmut show NAME`
prints, without a process per mutant). Writes the scores table into docs/testing.md between the
`<!-- mutation-scores -->` markers and the survivors, by file, to docs/mutation_survivors.md.
The score is mutmut's own count: killed / all mutants of the module; a timeout, "no tests" or
"not checked" mutant is not killed.
"""

from __future__ import annotations

import argparse
import ast
import collections
import difflib
import functools
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

BEGIN, END = "<!-- mutation-scores -->", "<!-- /mutation-scores -->"


def statuses(results: str) -> dict[str, str]:
    """Mutant name -> status, from the text of `mutmut results --all true`."""
    found = {}
    for line in results.splitlines():
        if "__mutmut_" in line and ":" in line:
            name, status = (part.strip() for part in line.rsplit(":", 1))
            found[name] = status
    return found


def _split(name: str) -> tuple[str, str]:
    """'agents.mpc.xǁMPCAgentǁact__mutmut_3' -> ('agents.mpc', 'xǁMPCAgentǁact__mutmut_3'):
    the module and the name mutmut gave the mutated function in its copy of it."""
    module = re.split(r"\.x[_ǁ]", name, maxsplit=1)[0]
    return module, name[len(module) + 1 :]


def module_path(name: str) -> str:
    """'agents.planners.sampling.xǁCEMǁplan__mutmut_3' -> 'agents/planners/sampling.py'."""
    return _split(name)[0].replace(".", "/") + ".py"


def function_name(name: str) -> str:
    """'…sampling.xǁCEMǁplan__mutmut_3' -> 'CEM.plan'; '…sampling.x_colored_noise__mutmut_1' ->
    'colored_noise'."""
    tail = re.split(r"\.x[_ǁ]", name, maxsplit=1)[1].split("__mutmut_")[0]
    return tail.strip("ǁ").replace("ǁ", ".")


def score_table(found: dict[str, str]) -> str:
    """Markdown table of mutants, killed, survived, timeouts, others and score per module."""
    by = collections.defaultdict(collections.Counter)
    for name, status in found.items():
        by[module_path(name)][status] += 1
    lines = [
        "| module | mutants | killed | survived | timeout | no tests / not checked | score |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    total: collections.Counter = collections.Counter()
    for path in sorted(by):
        lines.append(_row(f"`{path}`", by[path]))
        total += by[path]
    lines.append(_row("all", total))
    return "\n".join(lines)


def _row(label: str, count: collections.Counter) -> str:
    n = sum(count.values())
    other = n - count["killed"] - count["survived"] - count["timeout"]
    return (
        f"| {label} | {n} | {count['killed']} | {count['survived']} | {count['timeout']} "
        f"| {other} | {100 * count['killed'] / n:.1f}% |"
    )


def changed_lines(diff: str) -> tuple[str, str]:
    """The first removed and the first added line of a `mutmut show` diff."""
    minus = [
        x[1:].strip() for x in diff.splitlines() if x.startswith("-") and not x.startswith("---")
    ]
    plus = [
        x[1:].strip() for x in diff.splitlines() if x.startswith("+") and not x.startswith("+++")
    ]
    return (minus or [""])[0], (plus or [""])[0]


def survivors_page(
    found: dict[str, str], show: Callable[[str], str], source_root: Path = Path(".")
) -> str:
    """docs/mutation_survivors.md: one table per file of the mutants not killed (not counting
    "not checked" ones, which were never run), with the source line each one changes.

    `show(name)` returns the diff of one mutant (`mutant_diff`, or `mutmut show`)."""
    by = collections.defaultdict(list)
    for name, status in sorted(found.items()):
        if status not in ("killed", "not checked"):
            by[module_path(name)].append((name, status))
    lines = [
        "# Mutants not killed",
        "",
        "Written by `python -m benchmarks.mutation_report` after the last `mutmut run`; see",
        "docs/testing.md for the scores and which of these are equivalent.",
        "",
    ]
    for path in sorted(by):
        lines += [f"## `{path}`", "", "| line | function | mutant | status | was | mutated to |"]
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for name, status in by[path]:
            before, after = changed_lines(show(name))
            number = name.rsplit("__mutmut_", 1)[1]
            at = source_line(source_root / path, function_name(name), before)
            lines.append(
                f"| {at or '?'} | `{function_name(name)}` | {number} | {status} "
                f"| `{_cell(before)}` | `{_cell(after)}` |"
            )
        lines.append("")
    return "\n".join(lines)


def source_line(path: Path, function: str, text: str) -> int | None:
    """The number of the first line of `function` ('f' or 'Class.method') in the source file
    `path` that reads `text` (stripped); None if there is none."""
    if not path.exists() or not text:
        return None
    code = path.read_text()
    scope: list[ast.stmt] = ast.parse(code).body
    node: ast.AST | None = None
    for part in function.split("."):
        node = next((n for n in scope if getattr(n, "name", None) == part), None)
        if node is None:
            return None
        scope = getattr(node, "body", [])
    source = code.splitlines()
    for number in range(node.lineno, node.end_lineno + 1):
        if source[number - 1].strip() == text:
            return number
    return None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")[:90]


def replace_block(page: str, block: str) -> str:
    """`page` with the text between the score markers replaced by `block`."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"mutation_report: error: markers {BEGIN} … {END} not found in the page")
    return page[: start + len(BEGIN)] + "\n" + block + "\n" + page[end:]


def _mutmut(*args: str) -> str:
    return subprocess.run(["mutmut", *args], capture_output=True, text=True, check=True).stdout


@functools.cache
def _functions(path: Path) -> dict[str, list[str]]:
    """Function name -> its source lines, for every function (methods too) in `path`."""
    text = path.read_text()
    lines = text.splitlines()
    return {
        node.name: lines[node.lineno - 1 : node.end_lineno]
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def mutant_diff(name: str, root: Path = Path("mutants")) -> str:
    """The unified diff of mutant `name` against its original, read from mutmut's copies."""
    function = _split(name)[1]
    functions = _functions(root / module_path(name))
    original = functions[function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"]
    return "\n".join(difflib.unified_diff(original[1:], functions[function][1:], lineterm=""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testing", type=Path, default=Path("docs/testing.md"))
    parser.add_argument("--survivors", type=Path, default=Path("docs/mutation_survivors.md"))
    args = parser.parse_args()
    found = statuses(_mutmut("results", "--all", "true"))
    if not found:
        raise SystemExit(
            "mutation_report: error: `mutmut results` lists no mutants; run mutmut first"
        )
    table = score_table(found)
    args.testing.write_text(replace_block(args.testing.read_text(), table))
    args.survivors.write_text(survivors_page(found, mutant_diff))
    print(table)


if __name__ == "__main__":
    main()
