"""`wm tensorboard`: a port it cannot serve on is one line and exit 2, TensorBoard's own failure
is passed on as its exit status, and SIGTERM stops TensorBoard with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agents.app.media.inspection
from agents.app.cli import main


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listens(port: int) -> bool:
    with socket.socket() as client:
        client.settimeout(1.0)
        return client.connect_ex(("127.0.0.1", port)) == 0


def test_a_taken_port_is_one_line_and_exit_2(
    taken_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["tensorboard", "--logdir", str(tmp_path), "--port", str(taken_port)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"wm tensorboard: error: cannot serve on port {taken_port} of 127.0.0.1")
    assert "pass another --port" in err


@pytest.mark.parametrize("port", ["0", "99999", "-1"])
def test_a_port_out_of_range_is_a_usage_error(port: str, capsys) -> None:
    assert main(["tensorboard", "--port", port]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"wm tensorboard: error: argument --port: must be a port in 1..65535, got {port}; see "
        "`wm tensorboard --help`"
    )


def test_tensorboards_own_failure_is_passed_on(
    taken_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the port were taken between our check and TensorBoard's bind: TensorBoard exits 255.
    monkeypatch.setattr(agents.app.media.inspection, "check_port_free", lambda port: None)
    assert main(["tensorboard", "--logdir", str(tmp_path), "--port", str(taken_port)]) == 255


def test_sigterm_stops_tensorboard_too(tmp_path: Path) -> None:
    port = _free_port()
    wm = subprocess.Popen(
        [sys.executable, "-m", "agents.app.cli", "tensorboard", "--logdir", str(tmp_path)]
        + ["--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not _listens(port):
            assert wm.poll() is None, wm.communicate()
            assert time.monotonic() < deadline, "TensorBoard never listened"
            time.sleep(0.2)
        wm.send_signal(signal.SIGTERM)
        _, err = wm.communicate(timeout=60)
    finally:
        if wm.poll() is None:
            wm.kill()
            wm.wait()
    assert wm.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "wm tensorboard: terminated"
    assert not _listens(port), "TensorBoard is still listening"
