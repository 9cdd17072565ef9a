"""Every row of docs/errors.md: bad input gives one line on stderr naming what is wrong, exit
status 2, no traceback, and writes or overwrites nothing.

CLI rows run `agents.app.cli.main` in-process (one row also as a real subprocess); API rows call the
Python entry point and check it raises a one-line `WorldModelError`. Rows that need a run folder
get a private copy of one tiny trained run, which must be byte-identical afterwards.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from bad_input_table import CASES, TINY, Case
from bad_inputs import (
    HELD_LOCKS,
    truncate,
)

import agents.app.train
from agents.app.cli import main
from agents.app.runs.folder import CHECKPOINT_FILE, CONFIG_FILE, load_world_model
from worldmodel.errors import WorldModelError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained Pendulum run (a few seconds); rows copy it before breaking it."""
    before = torch.get_num_threads()
    runs = tmp_path_factory.mktemp("good_runs")
    try:
        assert main(["train", "--runs_dir", str(runs), *TINY]) == 0
    finally:
        torch.set_num_threads(before)
    (run,) = runs.iterdir()
    return run


@pytest.fixture(scope="module")
def unfinished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny `wm train` stopped after its last validation's checkpoint, before it was marked
    complete: its checkpoint holds training state to resume from (optimiser included)."""
    before = torch.get_num_threads()
    runs = tmp_path_factory.mktemp("unfinished_runs")

    def stop() -> dict:
        raise KeyboardInterrupt

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(agents.app.train, "complete_state", stop)
            assert main(["train", "--runs_dir", str(runs), *TINY]) == 130
    finally:
        torch.set_num_threads(before)
    (run,) = runs.iterdir()
    return run


@pytest.fixture(autouse=True)
def release_held_locks() -> Iterator[None]:
    yield
    HELD_LOCKS.close()


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Everything under `root`: relative path -> bytes (None for a folder); {} if root is absent."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def _expand(argv: tuple[str, ...], subs: dict[str, str]) -> list[str]:
    return [re.sub(r"\{[a-z]+\}", lambda m: subs[m.group()], a) for a in argv]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case: Case,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case.call is not None:
        with pytest.raises(WorldModelError) as info:
            case.call()
        message = str(info.value)
        assert "\n" not in message
        for word in case.words:
            assert word in message, (word, message)
        return

    runs = tmp_path / "runs"
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n")
    run = None
    if "{run}" in " ".join(case.argv):
        run = tmp_path / "run"
        shutil.copytree(request.getfixturevalue(case.source), run)
        if case.mutate is not None:
            case.mutate(run)
    if case.prepare is not None:
        runs.mkdir()
        case.prepare(runs, monkeypatch)
    before = {"runs": _snapshot(runs), "run": _snapshot(run) if run else {}}
    capsys.readouterr()

    subs = {"{runs}": str(runs), "{run}": str(run), "{file}": str(a_file)}
    if "{port}" in " ".join(case.argv):
        subs["{port}"] = str(request.getfixturevalue("taken_port"))
    code = main(_expand(case.argv, subs))

    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err, out)
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("wm"), err
    for word in case.words:
        assert word in lines[0], (word, lines[0])
    assert _snapshot(runs) == before["runs"], "a runs folder was written"
    assert run is None or _snapshot(run) == before["run"], "the run folder was modified"
    assert a_file.read_text() == "not a folder\n"


# Rows whose exit status is not 2, or that write (disk full part-way): each has its own test.
OTHER_ROWS = {
    "run-folder-exists": "tests/test_bad_input.py::"
    "test_existing_run_folder_gets_a_new_name_and_is_never_overwritten",
    "internal-error": "tests/agents/app/test_boundary.py::"
    "test_an_internal_error_in_a_command_exits_1_and_debug_shows_it",
    "disk-full": "tests/agents/app/test_disk_full.py::"
    "test_train_disk_full_at_a_checkpoint_keeps_the_last_one_and_resumes_exactly",
    "disk-full-data": "tests/agents/app/test_disk_full.py::"
    "test_run_disk_full_writing_data_keeps_data_and_checkpoint_and_resumes",
}


def test_docs_table_has_a_row_per_case() -> None:
    text = DOCS.read_text()
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.MULTILINE))
    assert rows == {c.id for c in CASES} | set(OTHER_ROWS)
    root = DOCS.parents[1]
    for test in OTHER_ROWS.values():  # each exists where the table says
        path, name = test.split("::")
        assert f"def {name}(" in (root / path).read_text(), test


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(WorldModelError, match="unknown environment"):
        main(["--debug", "train", "--env", "Nope-v0", "--runs_dir", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()


def test_truncated_checkpoint_in_a_real_process_exits_2(good_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    truncate(CHECKPOINT_FILE)(run)
    before = _snapshot(run)
    result = subprocess.run(
        [sys.executable, "-m", "agents.app.cli", "eval-model", str(run), "--device", "cpu"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt or truncated" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(run) == before


def test_existing_run_folder_gets_a_new_name_and_is_never_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Row `run-folder-exists`: not an error (exit 0); the new run goes to '<name>-1'."""
    monkeypatch.setattr("agents.app.runs.folder.time.strftime", lambda _fmt: "20250101-000000")
    runs = tmp_path / "runs"
    taken = runs / "Pendulum-v1__train__0__20250101-000000"
    taken.mkdir(parents=True)
    (taken / CONFIG_FILE).write_text('{"mine": true}\n')
    before = _snapshot(taken)
    assert main(["train", "--runs_dir", str(runs), *TINY]) == 0
    assert _snapshot(taken) == before
    fresh = runs / "Pendulum-v1__train__0__20250101-000000-1"
    assert (fresh / CHECKPOINT_FILE).is_file() and str(fresh) in capsys.readouterr().out
    assert sorted(p.name for p in runs.iterdir()) == [taken.name, fresh.name]
    load_world_model(fresh)  # the new run is complete and loads
