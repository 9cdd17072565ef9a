"""One writer per run folder: `wm train` and `wm run` (fresh or --resume) hold RUN/.lock.

The lock is an `fcntl.flock` on RUN/.lock, not a file made with O_CREAT|O_EXCL: the kernel drops
a flock when its holder dies in any way (kill -9 included), so a dead holder never blocks the
next writer and no PID has to be judged alive (PIDs are reused, and a PID from another host means
nothing here). The file holds the holder's PID and host only to name it in the refusal. A lock
file left by a killed writer is "stale": it is not locked, and the next writer takes it over.
Readers (`wm eval-model`, `wm dream`, `wm tensorboard`) do not take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from worldmodel.errors import ConfigError

LOCK_FILE = ".lock"


class RunFolderInUseError(ConfigError):
    """Another live process holds the run folder's lock."""


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock for the block; a one-line error if another process holds it.

    On leaving the block (return, exception, or SIGINT/SIGTERM turned into exceptions by `wm`)
    the lock file is removed, so a refused or finished command leaves the folder as it was.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} does not exist; pass one under runs/")
    fd = _acquire(run_dir / LOCK_FILE)
    try:
        yield
    finally:
        # Unlink while still locked: a waiter that opened this file sees it is no longer the
        # path's file (`_acquire` compares inodes) and starts over on a fresh one.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(run_dir / LOCK_FILE)
        os.close(fd)


def _acquire(path: Path) -> int:
    """An open, flock'ed descriptor of `path` holding our PID and host."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only folder, ...
            raise ConfigError(
                f"cannot lock run folder {path.parent} ({exc.strerror}); pass a writable one"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunFolderInUseError(
                f"run folder {path.parent} is in use by {holder} (lock {path}); wait for it or "
                "stop it"
            ) from None
        if _is_current(fd, path):
            break
        os.close(fd)  # the holder removed it as we opened it: lock the file now at `path`
    stale = os.read(fd, 4096)
    if stale:
        print(f"taking over the stale lock {path} of {_describe(stale)}", file=sys.stderr)
    os.ftruncate(fd, 0)
    owner = {"pid": os.getpid(), "host": socket.gethostname()}
    os.pwrite(fd, json.dumps(owner).encode(), 0)
    return fd


def _is_current(fd: int, path: Path) -> bool:
    """Whether `fd` is still the file at `path` (not one unlinked by its last holder)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _holder(fd: int) -> str:
    """'process 1234' (with its host if not this one), read from a locked lock file."""
    for _ in range(25):  # the holder writes its PID right after it locks: give it a moment
        text = os.pread(fd, 4096, 0)
        if text:
            return _describe(text)
        time.sleep(0.02)
    return "another process"


def _describe(text: bytes) -> str:
    try:
        owner = json.loads(text)
        pid, host = int(owner["pid"]), str(owner.get("host", ""))
    except (ValueError, KeyError, TypeError):
        return "another process"
    here = host in ("", socket.gethostname())
    return f"process {pid}" + ("" if here else f" on host {host}")
