"""Fuzz the command line with bad inputs: never a traceback, one line for every failure, exit
status 0, 1 (with the --debug hint) or 2, and no user file changed.

    python -m benchmarks.fuzz_inputs                     # 1,210 inputs (~5 minutes on 1 core)
    python -m benchmarks.fuzz_inputs --cases 120 --seed 1

The inputs are drawn by hypothesis (seeded by --seed) in the classes of `input_cases.py` and
`input_damage.py`: option values (wrong types, out of range, odd text), seeds, devices, ports,
sizes beyond the machine's memory, options valid alone but not together, stray tokens, damaged
config.json / checkpoint / data.npz (truncated, bytes flipped, keys deleted or of another type,
tensors and arrays changed, a folder where the file was), and file-system errors injected
part-way (disk full, read-only, no permission, I/O error). Each runs `agents.app.cli.main`
in-process on a copy of a prepared tiny run folder (`wm train`, `wm run`, or a `wm train`
stopped before it finished), in a scratch folder that is hashed before and after.

Counted per class: exit statuses; tracebacks (0 expected); failures that are not exactly one
line `wm <command>: ...` (0); user files changed (0): a file that was there changed or went, or
(for a failure) anything was written, except where a run legitimately writes: a successful
resume of the unfinished run, and the run folder a failing fresh run made before its disk
filled. For the injected faults: checkpoints left that no longer load (0), and resumes after the
fault is gone that fail (0). Results: benchmarks/results/fuzz_inputs.csv.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

import agents.app.train
from agents.app.boundary import DEBUG_HINT
from agents.app.cli import main
from agents.app.runs.folder import CHECKPOINT_FILE
from benchmarks.common import environment_info, write_csv
from benchmarks.input_cases import (
    Case,
    argv_case,
    device_case,
    fresh,
    option_case,
    port_case,
    rule_case,
    seed_case,
    size_case,
)
from benchmarks.input_damage import checkpoint_case, config_case, data_case, disk_case, injected
from worldmodel.io.checkpoint import load_checkpoint

CLASSES: dict[str, Callable[[], st.SearchStrategy[Case]]] = {
    "option-value": option_case, "seed": seed_case, "device": device_case, "port": port_case,
    "size": size_case, "cross-field": rule_case, "argv": argv_case, "config-json": config_case,
    "checkpoint": checkpoint_case, "data-npz": data_case, "disk": disk_case,
}  # fmt: skip
CASES = 1_210  #: 110 per class
TIMEOUT = 60  #: seconds a case may run (a valid option can make a long run; counted, not failed)
WRITES_ON_SUCCESS = {"unfinished": {CHECKPOINT_FILE}}  #: files a successful resume rewrites


class CaseTimeout(BaseException):
    """A case ran past TIMEOUT (a BaseException: `wm`'s boundary must not word it)."""


@dataclass
class Outcome:
    """What one case did."""

    kind: str
    status: int | None  #: exit status (None: timed out)
    traceback: bool  #: 'Traceback' in its output
    one_line: bool  #: a failure printed exactly one line `wm <command>: ...` (with the hint)
    changed: list[str]  #: user files changed, removed or (on failure) written
    broken_checkpoint: bool = False  #: a checkpoint left by a fault that does not load
    resume_failed: bool = False  #: resuming after the fault was gone failed
    silent_fault: bool = False  #: an injected error was raised, yet the command exited 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Sources:
    """Prepared run folders that cases copy, and a port something listens on."""

    runs: dict[str, Path]
    port: int


def prepare(root: Path) -> Sources:
    """A tiny finished `wm train`, a finished `wm run`, and a `wm train` stopped after its last
    checkpoint but before it finished (its resume has work left)."""
    runs = {}
    for name, command in (("train", "train"), ("run", "run")):
        assert _quiet_main(_fill(fresh(command, {}), {"{runs}": str(root / name)})) == 0
        (runs[name],) = (root / name).iterdir()

    def stop() -> dict:
        raise KeyboardInterrupt

    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(agents.app.train, "complete_state", stop))
        assert _quiet_main(_fill(fresh("train", {}), {"{runs}": str(root / "unfinished")})) == 130
    (runs["unfinished"],) = (root / "unfinished").iterdir()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    _LISTENERS.append(listener)
    return Sources(runs, listener.getsockname()[1])


_LISTENERS: list[socket.socket] = []


@contextlib.contextmanager
def _patched(owner: object, name: str, value: object) -> Iterator[None]:
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


def _fill(argv: tuple[str, ...], subs: dict[str, str]) -> list[str]:
    out = []
    for token in argv:
        for key, value in subs.items():
            token = token.replace(key, value)
        out.append(token)
    return out


def _quiet_main(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


def _hashes(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root` ('dir' for a folder)."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        out[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise CaseTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_case(case: Case, sources: Sources, scratch: Path, timeout: int = TIMEOUT) -> Outcome:
    """Run `case` in a fresh folder under `scratch` and judge what it did."""
    work = Path(tempfile.mkdtemp(dir=scratch))
    try:
        return _judge(case, sources, work, timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        torch.set_num_threads(1)  # `--threads` options set torch's global count


def _judge(case: Case, sources: Sources, work: Path, timeout: int) -> Outcome:
    run, a_file = work / "run", work / "a_file"
    a_file.write_text("a user's file\n")
    if case.source is not None:
        shutil.copytree(sources.runs[case.source], run)
        if case.damage is not None:
            case.damage(run)
    subs = {"{runs}": str(work / "runs"), "{run}": str(run), "{file}": str(a_file)}
    argv = _fill(case.argv, subs | {"{port}": str(sources.port)})
    before = _hashes(work)
    out, err = io.StringIO(), io.StringIO()
    start, status, raised = time.perf_counter(), None, [0]
    cwd = os.getcwd()
    os.chdir(work)  # a relative --runs-dir lands here
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            with _time_limit(timeout), injected(case.fault, work) as raised:
                status = main(argv)
    except CaseTimeout:
        pass
    finally:
        os.chdir(cwd)
    seconds = time.perf_counter() - start
    text = out.getvalue() + err.getvalue()
    outcome = Outcome(
        kind=case.kind,
        status=status,
        traceback="Traceback" in text,
        one_line=status in (0, None) or _one_line(err.getvalue(), argv, status),
        changed=_changed(case, before, _hashes(work), status),
        seconds=seconds,
    )
    outcome.silent_fault = bool(raised[0]) and status == 0
    if case.fault is not None and status != 0:
        outcome.broken_checkpoint, outcome.resume_failed = _after_fault(case, work)
    return outcome


def _one_line(err: str, argv: list[str], status: int) -> bool:
    lines = err.strip().splitlines()
    command = next((a for a in argv if not a.startswith("-")), "")
    ok = len(lines) == 1 and lines[0].startswith(f"wm {command}: ")
    return ok and (status != 1 or lines[0].endswith(DEBUG_HINT))


def _changed(case: Case, before: dict, after: dict, status: int | None) -> list[str]:
    """Files that were there and changed or went; on a failure also files written."""
    allowed = WRITES_ON_SUCCESS.get(case.source or "", set()) if status in (0, None) else set()
    if case.fault is not None:
        allowed = allowed | {CHECKPOINT_FILE}  # a fault after a checkpoint: a newer good one
    changed = [k for k, h in before.items() if after.get(k) != h and Path(k).name not in allowed]
    # A fault stops a command part-way through writing its own new files; bad input must
    # stop it before it writes anything.
    if status not in (0, None) and case.fault is None:
        changed += [k for k in after if k not in before]
    return changed


def _after_fault(case: Case, work: Path) -> tuple[bool, bool]:
    """Whether a checkpoint the fault left fails to load, and whether resuming (the fault gone)
    fails; a run folder that the fault kept from being made has nothing to resume."""
    runs = sorted((work / "runs").glob("*")) if (work / "runs").exists() else []
    folders = [work / "run"] if case.source else runs
    broken = False
    for folder in folders:
        if (folder / CHECKPOINT_FILE).is_file():
            try:
                load_checkpoint(folder / CHECKPOINT_FILE)
            except Exception:
                broken = True
    resumable = [f for f in folders if (f / "config.json").is_file()]
    if not resumable or case.argv[0] not in ("train", "run"):
        return broken, False
    status = _quiet_main([case.argv[0], "--resume", str(resumable[0])])
    torch.set_num_threads(1)
    return broken, status != 0


def fuzz(kind: str, cases: int, seed: int, sources: Sources, scratch: Path) -> list[Outcome]:
    """`cases` draws of class `kind`, each run and judged."""
    outcomes: list[Outcome] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=cases, database=None, deadline=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(case=CLASSES[kind]())
    def draw(case: Case) -> None:
        outcome = run_case(case, sources, scratch)
        outcomes.append(outcome)
        if _bad(outcome):
            print(f"  BAD {kind}: {case.argv} {case.what} {case.fault} -> {asdict(outcome)}")

    draw()
    return outcomes


def _bad(o: Outcome) -> bool:
    return (
        o.traceback or not o.one_line or bool(o.changed) or o.broken_checkpoint
        or o.resume_failed or o.silent_fault or o.status not in (0, 1, 2, None)
    )  # fmt: skip


def summary(kind: str, outcomes: list[Outcome]) -> dict[str, object]:
    """One CSV row: the counts of a class."""
    count = lambda test: sum(1 for o in outcomes if test(o))  # noqa: E731
    return {
        "class": kind,
        "cases": len(outcomes),
        "exit_0": count(lambda o: o.status == 0),
        "exit_1": count(lambda o: o.status == 1),
        "exit_2": count(lambda o: o.status == 2),
        "exit_other": count(lambda o: o.status not in (0, 1, 2, None)),
        "timeouts": count(lambda o: o.status is None),
        "tracebacks": count(lambda o: o.traceback),
        "not_one_line": count(lambda o: not o.one_line),
        "files_changed": count(lambda o: bool(o.changed)),
        "broken_checkpoints": count(lambda o: o.broken_checkpoint),
        "failed_resumes": count(lambda o: o.resume_failed),
        "silent_faults": count(lambda o: o.silent_fault),
        "seconds": round(sum(o.seconds for o in outcomes), 1),
    }


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=CASES, help="inputs in all (split by class)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed of the draws")
    parser.add_argument("--classes", nargs="+", default=list(CLASSES), choices=list(CLASSES))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fuzz_inputs.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("agents").setLevel(logging.ERROR)  # planner fallbacks of damaged models
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = prepare(Path(tmp) / "sources")
        per_class = max(args.cases // len(args.classes), 1)
        for kind in args.classes:
            outcomes = fuzz(kind, per_class, args.seed, sources, Path(tmp))
            rows.append(summary(kind, outcomes))
            print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    total = {k: sum(r[k] for r in rows) if k != "class" else "total" for k in rows[0]}
    total["seconds"] = round(float(total["seconds"]), 1)
    rows.append(total)
    print(" ".join(f"{k}={v}" for k, v in total.items()))
    write_csv(args.out, rows, environment_info([args.seed], time.perf_counter() - start))


if __name__ == "__main__":
    main_cli()
