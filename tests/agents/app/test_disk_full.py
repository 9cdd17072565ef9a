"""Disk full and read-only folders under `wm`: one line, exit status 2, the last good checkpoint
intact, and the run resumes once there is space again (ENOSPC injected where the writes go)."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from tensorboard.summary.writer.record_writer import RecordWriter
from tiny_run import TINY_LOOP

import worldmodel.data.store
import worldmodel.io.checkpoint
from agents.app.cli import main
from agents.app.runs.folder import CHECKPOINT_FILE, DATA_FILE
from worldmodel.io import atomic
from worldmodel.io.checkpoint import load_checkpoint

TINY = [
    "--steps", "600", "--train.max_steps", "30", "--train.eval_every", "10", "--train.patience",
    "100", "--model.hidden", "32", "--train.batch_size", "32", "--no-progress", "--threads", "1",
    "--no-video", "--device", "cpu",
]  # fmt: skip
FULL = "No space left on device"


def _full_disk(*args: object) -> None:
    raise OSError(errno.ENOSPC, FULL)


class FillsUp:
    """`atomic_write_bytes` as imported by `module`, whose disk is full from call `at` on: the
    real writer runs (temp file, fsync) and fails at its fsync; payloads written are kept."""

    def __init__(self, module: object, at: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real, self.at, self.calls, self.written = atomic.atomic_write_bytes, at, 0, []
        monkeypatch.setattr(module, "atomic_write_bytes", self)
        self.monkeypatch = monkeypatch

    def __call__(self, path: Path, payload: bytes) -> None:
        self.calls += 1
        if self.calls < self.at:
            self.real(path, payload)
            self.written.append(payload)
            return
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(atomic.os, "fsync", _full_disk)
            self.real(path, payload)


def _only_run(runs: Path) -> Path:
    (run,) = runs.iterdir()
    return run


def _leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == ".lock")


def _model(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / CHECKPOINT_FILE)[0]["model"]


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_train_disk_full_at_a_checkpoint_keeps_the_last_one_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--runs_dir", str(tmp_path / "whole"), *TINY]) == 0
    reference = _model(_only_run(tmp_path / "whole"))

    disk = FillsUp(worldmodel.io.checkpoint, at=2, monkeypatch=monkeypatch)  # the 2nd checkpoint
    capsys.readouterr()
    assert main(["train", "--runs_dir", str(tmp_path / "runs"), *TINY]) == 2
    run = _only_run(tmp_path / "runs")
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"wm train: error: {run / CHECKPOINT_FILE}: {FULL}; free some space, then continue with "
        f"`wm train --resume {run}`"
    ]
    assert (run / CHECKPOINT_FILE).read_bytes() == disk.written[-1]  # the last good one, whole
    assert _leftovers(run) == []

    monkeypatch.undo()  # space freed
    assert main(["train", "--resume", str(run)]) == 0
    resumed = _model(run)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)  # as if never stopped
    assert load_checkpoint(run / CHECKPOINT_FILE)[1]["train"]["complete"]


def test_run_disk_full_writing_data_keeps_data_and_checkpoint_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--steps", "600", "--loop.seed_steps", "200", *TINY_LOOP, "--device", "cpu"]
    FillsUp(worldmodel.data.store, at=2, monkeypatch=monkeypatch)  # data.npz after episode 1
    capsys.readouterr()
    assert main(["run", "--runs_dir", str(tmp_path / "runs"), *options]) == 2
    run = _only_run(tmp_path / "runs")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{run / DATA_FILE}: {FULL}" in err[0]
    assert err[0].endswith(f"`wm run --resume {run}`")
    before = {name: (run / name).read_bytes() for name in (DATA_FILE, CHECKPOINT_FILE)}
    assert load_checkpoint(run / CHECKPOINT_FILE)[1]["env_steps"] == 200  # the first one
    assert _leftovers(run) == []

    monkeypatch.undo()
    assert main(["run", "--resume", str(run)]) == 0
    assert load_checkpoint(run / CHECKPOINT_FILE)[1]["env_steps"] == 600
    assert (run / DATA_FILE).read_bytes() != before[DATA_FILE]


def test_disk_full_in_tensorboards_writer_thread_is_one_line_not_a_thread_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real, calls = RecordWriter.write, [0]

    def write(self: RecordWriter, data: bytes) -> None:
        calls[0] += 1
        if calls[0] > 5:
            raise OSError(errno.ENOSPC, FULL)
        real(self, data)

    monkeypatch.setattr(RecordWriter, "write", write)
    capsys.readouterr()
    assert main(["train", "--runs_dir", str(tmp_path / "runs"), *TINY]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and FULL in err, err
    assert "Traceback" not in err and "Exception in thread" not in err
    run = _only_run(tmp_path / "runs")
    if (run / CHECKPOINT_FILE).exists():
        load_checkpoint(run / CHECKPOINT_FILE)  # whatever was written is whole


def _read_only(kind: str, monkeypatch: pytest.MonkeyPatch, folder: Path) -> Callable[[], None]:
    """Make `folder` read-only: really (chmod; not for root) or by an injected EROFS."""
    if kind == "chmod":
        if os.geteuid() == 0:
            pytest.skip("root writes to read-only folders")
        for path in (folder, *folder.rglob("*")):
            path.chmod(0o555 if path.is_dir() else 0o444)
        return lambda: [p.chmod(0o755) for p in (folder, *folder.rglob("*")) if p.is_dir()]

    def refuse(path: object) -> None:
        if str(path).startswith(str(folder)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    real_open, real_makedirs = os.open, os.makedirs
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def open_(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & writes:
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def makedirs(path: object, *args: object, **kwargs: object) -> None:
        refuse(path)
        real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "makedirs", makedirs)
    return lambda: None


@pytest.mark.parametrize("kind", ["chmod", "injected"])
def test_read_only_run_folder_is_one_line_and_unchanged(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--runs_dir", str(tmp_path / "runs"), *TINY]) == 0
    source = _only_run(tmp_path / "runs")
    run = tmp_path / "run"
    shutil.copytree(source, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    restore = _read_only(kind, monkeypatch, run)
    try:
        capsys.readouterr()
        for argv in (["eval-model", str(run)], ["train", "--resume", str(run)]):
            assert main(argv) == 2, argv
            lines = capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"wm {argv[0]}: error: "), lines
            assert any(w in lines[0] for w in ("Read-only", "Permission denied")), lines
    finally:
        restore()
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
