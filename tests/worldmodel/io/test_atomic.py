"""Atomic writes under a full disk or a read-only folder: the old file stays whole, no temp file
is left, and the error names the file that could not be written."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest

from worldmodel.io import atomic
from worldmodel.io.atomic import atomic_write_bytes


class _FullDisk(io.BufferedWriter):
    """A file whose disk fills after `room` bytes: the write goes part-way, then ENOSPC."""

    room = 10

    def write(self, data: bytes) -> int:  # type: ignore[override]
        super().write(bytes(data[: self.room]))
        raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_part_way_leaves_the_old_file_whole_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.safetensors"
    atomic_write_bytes(path, b"the old checkpoint")
    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(OSError) as info:
        atomic_write_bytes(path, b"a new checkpoint, longer than the room left" * 10)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == b"the old checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_a_failing_fsync_or_rename_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    path = tmp_path / "data.npz"
    atomic_write_bytes(path, b"old")

    def fail(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, where, fail)
    with pytest.raises(OSError, match="No space left") as info:
        atomic_write_bytes(path, b"new")
    assert info.value.filename == str(path)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_read_only_folder_is_an_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(tmp_path / "config.json", b"{}")
    assert info.value.errno == errno.EROFS and info.value.filename == str(tmp_path / "config.json")
    assert not (tmp_path / "config.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_really_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    atomic_write_bytes(folder / "x", b"old")
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError) as info:
            atomic_write_bytes(folder / "x", b"new")
        assert info.value.filename == str(folder / "x")
        assert (folder / "x").read_bytes() == b"old"
    finally:
        folder.chmod(0o755)
