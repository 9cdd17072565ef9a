"""Property: whatever option values, stray tokens, damaged run-folder files or file-system errors
`wm` is given, it never prints a traceback, exits 0, 1 (with the --debug hint) or 2 with one
line, and changes no user file (the run's own legitimate writes aside); after an injected disk
error the checkpoint still loads and the run resumes.

The cases are those of `benchmarks/fuzz_inputs.py` (drawn by hypothesis, derandomised), a few
per class here; `python -m benchmarks.fuzz_inputs` runs a thousand and more.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import benchmarks.fuzz_inputs
from benchmarks.fuzz_inputs import CLASSES, Outcome, Sources, prepare, run_case
from benchmarks.input_cases import Case, size_case

EXAMPLES = 8  #: per class; the whole file stays under a minute on one core
SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sources]:
    """The prepared run folders the cases copy (a tiny `wm train`, `wm run`, unfinished train)."""
    yield prepare(tmp_path_factory.mktemp("fuzz_sources"))


def _check(case: Case, outcome: Outcome) -> None:
    report = f"{case.kind}: {case.argv} {case.what} {case.fault} -> {dataclasses.asdict(outcome)}"
    assert outcome.status in (0, 1, 2), report  # None: ran past the time limit
    assert not outcome.traceback, report
    assert outcome.one_line, report  # a failure is one line (exit 1: with the --debug hint)
    assert outcome.changed == [], report
    assert not outcome.broken_checkpoint and not outcome.resume_failed, report
    assert not outcome.silent_fault, report  # an injected disk error is never swallowed


@pytest.mark.parametrize("kind", sorted(CLASSES))
@settings(max_examples=EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_bad_inputs_never_give_a_traceback_and_change_no_file(
    kind: str, data: st.DataObject, sources: Sources, tmp_path_factory: pytest.TempPathFactory
) -> None:
    case = data.draw(CLASSES[kind](), label="case")
    _check(case, run_case(case, sources, tmp_path_factory.getbasetemp(), timeout=120))


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(case=size_case(least=13))
def test_sizes_no_machine_holds_are_refused_before_anything_is_written(
    case: Case, sources: Sources, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """10**13 of any size that memory grows with is beyond any machine: always exit 2."""
    outcome = run_case(case, sources, tmp_path_factory.getbasetemp(), timeout=120)
    _check(case, outcome)
    assert outcome.status == 2 and outcome.seconds < 10, case.argv


def _pretend(status: int, err: str, write: bool = False):  # noqa: ANN202
    """A stand-in for `wm` that prints `err`, maybe writes into the run folder, exits `status`."""

    def main(argv: list[str]) -> int:
        if write:
            (Path(argv[-1]) / "stray.txt").write_text("written by a failing command")
        print(err, file=sys.stderr, end="")
        return status

    return main


@pytest.mark.parametrize(
    ("status", "err", "write", "caught"),
    [
        (
            2,
            "Traceback (most recent call last):\n  ...\nValueError: x\n",
            False,
            ("traceback", "one_line"),
        ),
        (2, "wm eval-model: error: a; b\nand a second line\n", False, ("one_line",)),
        (1, "wm eval-model: internal error: KeyError: 'x'\n", False, ("one_line",)),
        (2, "wm train: error: another command's line\n", False, ("one_line",)),
        (2, "wm eval-model: error: bad; fix it\n", True, ("changed",)),
        (3, "wm eval-model: error: bad; fix it\n", False, ("status",)),
    ],
)
def test_the_judge_catches_each_violation(
    status: int, err: str, write: bool, caught: tuple[str, ...], sources: Sources, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The property is not vacuous: a command that breaks a rule is seen to break it."""
    monkeypatch.setattr(benchmarks.fuzz_inputs, "main", _pretend(status, err, write))
    case = Case("checkpoint", ("eval-model", "{run}"), source="train")
    outcome = run_case(case, sources, tmp_path)
    with pytest.raises(AssertionError):
        _check(case, outcome)
    seen = {
        "traceback": outcome.traceback,
        "one_line": not outcome.one_line,
        "changed": bool(outcome.changed),
        "status": outcome.status not in (0, 1, 2),
    }
    assert tuple(k for k, v in seen.items() if v) == caught
