"""The command line's boundary: each kind of exception becomes one line and its exit status."""

from __future__ import annotations

import errno
import json
import threading
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

import agents.app.train
from agents.app.boundary import DEBUG_HINT, describe, printable, quiet_writer_threads
from agents.app.cli import main
from worldmodel.errors import CheckpointError


def _decode_error() -> UnicodeDecodeError:
    try:
        b"ok \xff".decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc
    raise AssertionError


def _json_error() -> json.JSONDecodeError:
    try:
        json.loads('{"a": ')
    except json.JSONDecodeError as exc:
        return exc
    raise AssertionError


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/x/y.bin"),
         "/x/y.bin: No space left on device; free some space"),
        (OSError(errno.EROFS, "Read-only file system", "/x"), "/x: Read-only file system;"),
        (PermissionError(errno.EACCES, "Permission denied", "/x"), "make it writable"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/x"), "a folder is where a file"),
        (OSError(errno.EIO, "Input/output error"), "Input/output error; check the file"),
        (_decode_error(), "not UTF-8 text (invalid start byte at byte 3)"),
        (_json_error(), "not valid JSON"),
        (zlib.error("Error -3 while decompressing data"), "compressed file is damaged"),
        (zipfile.BadZipFile("Bad CRC-32"), "compressed file is damaged"),
        (MemoryError(), "out of memory (an allocation failed)"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
         "out of memory (CUDA out of memory)"),
        (CheckpointError("checkpoint x is corrupt;\nrestore it"), "x is corrupt; restore"),
    ],
)  # fmt: skip
def test_input_and_environment_errors_are_one_line_with_status_2(
    exc: BaseException, words: str
) -> None:
    status, line = describe(exc, "train")
    assert status == 2 and line.startswith("wm train: error: ") and "\n" not in line
    assert words in line, line


def test_disk_full_in_a_run_folder_says_how_to_resume(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    exc = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "data.npz"))
    _, line = describe(exc, "run")
    assert line.endswith(f"free some space, then continue with `wm run --resume {tmp_path}`")
    # A reader's output (not a run's own file) or a file outside a run folder: no resume hint.
    assert "--resume" not in describe(exc, "eval-model")[1]
    other = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "eval" / "events"))
    assert "--resume" not in describe(other, "run")[1]


def test_any_other_exception_is_an_internal_error_with_status_1() -> None:
    status, line = describe(RuntimeError("boom\n  at line 2"), "mpc")
    assert status == 1
    assert line == f"wm mpc: internal error: RuntimeError: boom at line 2; {DEBUG_HINT}"
    assert describe(KeyError("k"), "dream")[1].startswith("wm dream: internal error: KeyError: 'k'")
    assert "(no message)" in describe(ValueError(), "train")[1]


def test_printable_escapes_line_breaks_of_any_kind_and_escape_sequences() -> None:
    text = printable("a\nb\u2028c\x1b[2Jd\x85e é ü 名")
    assert text == "a\\nb\\u2028c\\x1b[2Jd\\x85e é ü 名"
    assert len(text.splitlines()) == 1


def test_an_internal_error_in_a_command_exits_1_and_debug_shows_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(agents.app.train, "eval_model", broken)
    assert main(["eval-model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        f"wm eval-model: internal error: RuntimeError: a bug over two lines; {DEBUG_HINT}"
    )
    with pytest.raises(RuntimeError, match="a bug"):
        main(["--debug", "eval-model", str(tmp_path)])


def test_an_os_error_in_a_command_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(agents.app.train, "eval_model", full)
    assert main(["eval-model", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"wm eval-model: error: {tmp_path / 'x'}: No space left on device; free some space"
    )


def test_writer_thread_os_errors_are_quiet_others_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))

    def fail(exc: BaseException) -> None:
        raise exc

    bug = ValueError("a bug in a thread")
    with quiet_writer_threads():
        for exc in (OSError(errno.ENOSPC, "full"), bug):
            thread = threading.Thread(target=fail, args=(exc,))
            thread.start()
            thread.join()
    assert seen == [bug]  # the disk error is left to the main thread's next write
    threading.excepthook(threading.ExceptHookArgs((OSError, OSError(), None, None)))
    assert len(seen) == 2  # the previous hook is back
