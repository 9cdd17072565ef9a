"""The command line's boundary: every exception that reaches it becomes one line and a status.

- 2: bad input or an environment that cannot serve the command: the project's own errors
  (`WorldModelError`), the file system (disk full, read-only, a folder where a file should be,
  no permission), text that is not UTF-8 or JSON, a damaged archive, running out of memory;
  the line names the file or option and what to do.
- 1: anything else is a fault of worldmodel itself: `internal error: <Type>: <message>` and a
  pointer to `--debug`, which shows the traceback.

(Ctrl-C, SIGTERM and a closed pipe are the command line's own business: `cli.main`.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import threading
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from worldmodel.errors import WorldModelError

INPUT_ERROR = 2
INTERNAL_ERROR = 1
DEBUG_HINT = "rerun with --debug for the traceback and report it"
RESUMABLE = ("train", "run")  #: the commands whose runs `--resume` continues
_RUN_FILES = ("config.json", "checkpoint.safetensors", "data.npz")
# What to do about a file-system error, by errno (else the generic advice below).
_OS_FIXES = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (the disk quota is used up)",
    errno.EROFS: "the file system is read-only: pass a folder on a writable one",
    errno.EACCES: "make it writable and readable for this user, or pass another folder",
    errno.EPERM: "make it writable and readable for this user, or pass another folder",
    errno.EISDIR: "a folder is where a file should be: remove or rename it",
    errno.ENOTDIR: "a file is where a folder should be: remove or rename it",
    errno.EEXIST: "a file is where a folder should be: remove or rename it",
    errno.ENOENT: "it does not exist: check the path",
    errno.ENAMETOOLONG: "pass a shorter path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
}


def one_line(text: str) -> str:
    """`text` on one line: a message may quote a file's bytes or a library's multi-line text."""
    return " ".join(str(text).split())


def printable(text: str) -> str:
    """`text` with every character a terminal would not print as itself escaped (`\\x1b`,
    `\\u2028`, ...): a message quotes the user's tokens and files, which may hold line breaks
    of any script, or escape sequences that would rewrite the terminal."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def describe(exc: BaseException, command: str) -> tuple[int, str]:
    """The exit status and the one line (`wm <command>: ...`) for `exc`."""
    prog = f"wm {command}"
    if isinstance(exc, WorldModelError):  # envs.UnknownTaskError is one too
        return INPUT_ERROR, f"{prog}: error: {one_line(str(exc))}"
    reason = _input_problem(exc, command)
    if reason is not None:
        return INPUT_ERROR, f"{prog}: error: {one_line(reason)}"
    text = one_line(str(exc)) or "(no message)"
    return INTERNAL_ERROR, f"{prog}: internal error: {type(exc).__name__}: {text}; {DEBUG_HINT}"


def _input_problem(exc: BaseException, command: str) -> str | None:
    """What is wrong with the input or the machine that `exc` shows, or None (a bug)."""
    if isinstance(exc, OSError):
        return _os_problem(exc, command)
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}); restore it"
    if isinstance(exc, json.JSONDecodeError):
        return f"a file is not valid JSON ({exc.msg} at line {exc.lineno}); restore it"
    if isinstance(exc, zlib.error | zipfile.BadZipFile | EOFError):
        return f"a compressed file is damaged ({exc}); restore it or re-collect the data"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        head = one_line(str(exc)).split(". ")[0]
        return (
            f"out of memory ({head or 'an allocation failed'}); lower the sizes "
            "(--train.batch-size, --model.hidden, --planner.population, ...)"
        )
    return None


def _os_problem(exc: OSError, command: str) -> str:
    """A file-system error as what failed, on which file, and what to do."""
    name = exc.filename or exc.filename2
    reason = exc.strerror or one_line(str(exc)) or type(exc).__name__
    fix = _OS_FIXES.get(exc.errno or 0, "check the file and its folder")
    run_dir = _run_dir_of(name)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and command in RESUMABLE and run_dir:
        fix += f", then continue with `wm {command} --resume {run_dir}`"
    return f"{name}: {reason}; {fix}" if name else f"{reason}; {fix}"


def _run_dir_of(name: object) -> Path | None:
    """The run folder that file `name` is part of, if it is one of a run folder's files."""
    if not isinstance(name, str | Path):
        return None
    path = Path(name)
    own = path.name in _RUN_FILES or path.name.startswith(tuple(f".{f}." for f in _RUN_FILES))
    return path.parent if own and (path.parent / "config.json").is_file() else None


@contextlib.contextmanager
def quiet_writer_threads() -> Iterator[None]:
    """Keep TensorBoard's writer thread from printing a traceback when a write fails (disk full,
    read-only): it re-raises the error in the main thread at the next write, where `describe`
    words it. Other threads' exceptions are printed as usual."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not isinstance(args.exc_value, OSError):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous
