"""One writer per run folder: `wm train` / `wm run` (fresh or --resume) hold RUN/.lock; a second
writer exits 2 naming the holder, a killed holder's lock is taken over, readers take no lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tiny_run import TINY_LOOP

from agents.app.cli import main
from agents.app.runs.lock import LOCK_FILE, RunFolderInUseError, run_folder_lock

TINY_TRAIN = [
    *("--env", "Pendulum-v1", "--steps", "600", "--train.max_steps", "20"),
    *("--train.eval_every", "10", "--model.hidden", "32", "--train.batch_size", "32"),
    *("--no-progress", "--no-video", "--threads", "1", "--device", "cpu"),
]
WM = [sys.executable, "-m", "agents.app.cli"]
# A real process that holds RUN's lock until it is killed (argv[1] is RUN).
HOLDER = textwrap.dedent(
    """
    import sys, time
    from agents.app.runs.lock import run_folder_lock
    with run_folder_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny `wm train` run; its lock is gone once it has finished."""
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", *TINY_TRAIN, "--runs_dir", str(runs)]) == 0
    (run_dir,) = runs.iterdir()
    assert not (run_dir / LOCK_FILE).exists()
    return run_dir


def _hold(run_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=_env()
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def _wm(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WM, *argv], capture_output=True, text=True, timeout=300, check=False, env=_env()
    )


def test_lock_holds_pid_and_host_and_is_removed_on_exit(tmp_path: Path) -> None:
    with run_folder_lock(tmp_path):
        owner = json.loads((tmp_path / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["host"]
        with pytest.raises(RunFolderInUseError, match=f"in use by process {os.getpid()}"):
            with run_folder_lock(tmp_path):
                pass
        assert (tmp_path / LOCK_FILE).exists()  # the refusal left the holder's lock alone
    assert not (tmp_path / LOCK_FILE).exists()
    with pytest.raises(ValueError), run_folder_lock(tmp_path):  # released on an exception too
        raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_a_second_writer_exits_2_naming_the_holder_and_changes_nothing(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = _hold(trained)
    try:
        before = _snapshot(trained)
        expected = (
            f"run folder {trained} is in use by process {holder.pid} "
            f"(lock {trained / LOCK_FILE}); wait for it or stop it"
        )
        result = _wm("run", "--resume", str(trained))  # a real second process
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == f"wm run: error: {expected}"
        assert _snapshot(trained) == before
        capsys.readouterr()
        assert main(["train", "--resume", str(trained)]) == 2
        assert capsys.readouterr().err.strip() == f"wm train: error: {expected}"
        assert _snapshot(trained) == before
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_holder_is_taken_over(trained: Path) -> None:
    holder = _hold(trained)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    stale = json.loads((trained / LOCK_FILE).read_text())
    assert stale["pid"] == holder.pid  # kill -9 left the file, but not the lock
    result = _wm("train", "--resume", str(trained))
    assert result.returncode == 0, result.stderr
    assert f"taking over the stale lock {trained / LOCK_FILE} of process {holder.pid}" in (
        result.stderr
    )
    assert "already complete" in result.stdout
    assert not (trained / LOCK_FILE).exists()


def test_readers_take_no_lock(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with run_folder_lock(trained):
        assert main(["eval-model", str(trained), "--device", "cpu"]) == 0
        assert main(["dream", str(trained), "--steps", "5", "--no-video"]) == 0
    assert "in use" not in capsys.readouterr().err


def _wait_for_lock(runs: Path, process: subprocess.Popen, timeout: float = 120.0) -> Path:
    """The run folder under `runs` once `process` has locked it."""
    deadline = time.monotonic() + timeout
    while not (locks := list(runs.glob(f"*/{LOCK_FILE}"))):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no run folder was locked"
        time.sleep(0.05)
    return locks[0].parent


def test_a_running_wm_run_refuses_a_resume_and_releases_its_lock_on_sigterm(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    args = ["--env", "Pendulum-v1", "--steps", "100000", "--loop.seed_steps", "200", *TINY_LOOP]
    first = subprocess.Popen(
        [*WM, "run", *args, "--threads", "1", "--runs_dir", str(runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        run_dir = _wait_for_lock(runs, first)
        second = _wm("run", "--resume", str(run_dir))
        assert second.returncode == 2, second.stderr
        assert f"is in use by process {first.pid}" in second.stderr
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "wm run: terminated"
    assert not (run_dir / LOCK_FILE).exists()
