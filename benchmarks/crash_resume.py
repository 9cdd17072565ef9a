"""Crash test of `wm run --resume` and `wm train --resume`: SIGKILL a real run at random moments,
resume it.

    python -m benchmarks.crash_resume                 # 20 kills (a few minutes on 1 core)
    python -m benchmarks.crash_resume --kills 3 --seed 1
    python -m benchmarks.crash_resume --command train # the same for `wm train`
    python -m benchmarks.crash_resume --cost learned  # runs that fit a learned cost too

A short `wm run` (Pendulum-v1, tiny model and planner, one thread) is started as a process and
killed with SIGKILL after a random delay (seeded); then `wm run --resume RUN_DIR` continues it,
and that process may be killed in turn, `--kills` times in all; the last resume runs to the end.
After each kill every file the run writes is checked: config.json (`load_config`), the
checkpoint (`load_checkpoint`) and data.npz (`EpisodeStore.load`, and it must hold at least the
checkpoint's episodes). With `--command train` the run is a short `wm train` (2,000 random
steps, then a tiny model fitted for 10,000 gradient steps, checkpointed every 100) and its steps
are gradient steps. Reported:

- resumes that worked: `--resume` processes that restored the checkpoint and went on (killed
  later, or finished with exit status 0), out of those started;
- corrupt files: files that failed those checks after a kill (0 expected: every write is atomic);
- steps lost per crash: env steps the killed process had reached (the last whole episode in its
  TensorBoard events) minus the steps in the checkpoint left behind; at most one checkpoint
  interval, which is one episode (200 steps on Pendulum-v1) plus its retraining. Steps of an
  episode still in progress at the kill are not in the events and are lost too (< one episode).
  For `wm train`: the last validation logged minus the checkpoint's gradient steps, at most one
  interval (`--train.eval_every`); the steps since that validation are lost too.

The first process is killed only once it has written its first checkpoint (before that there is
nothing to resume: a new run starts). Results go to benchmarks/results/crash_resume.csv
(`crash_resume_train.csv` for `wm train`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

from agents.app.runs.folder import CHECKPOINT_FILE, DATA_FILE, load_config
from worldmodel.data.store import EpisodeStore
from worldmodel.errors import WorldModelError
from worldmodel.io.checkpoint import load_checkpoint

RUN_ARGS = [
    "--env", "Pendulum-v1", "--steps", "3000", "--loop.seed_steps", "200",
    "--loop.first_train_steps", "100", "--loop.train_steps", "50", "--loop.eval_episodes", "1",
    "--train.eval_every", "25", "--train.batch_size", "32", "--model.hidden", "32",
    "--planner.horizon", "5", "--planner.iterations", "2",
    "--no-video", "--no-progress", "--threads", "1", "--device", "cpu",
]  # fmt: skip
TRAIN_ARGS = [
    "--env", "Pendulum-v1", "--steps", "2000", "--train.max_steps", "10000",
    "--train.eval_every", "100", "--train.patience", "1000", "--train.batch_size", "32",
    "--model.hidden", "32", "--no-video", "--no-progress", "--threads", "1", "--device", "cpu",
]  # fmt: skip


@dataclass(frozen=True)
class Command:
    """What the crash test needs to know of one resumable command."""

    args: list[str]  #: options of a short run
    tag: str  #: TensorBoard tag whose last step is how far a killed process got
    unit: str  #: what its steps count
    interval: int  #: its steps between checkpoints


COMMANDS = {
    "run": Command(RUN_ARGS, "charts/episodic_return", "env steps", 200),  # a Pendulum episode
    "train": Command(TRAIN_ARGS, "val/loss", "gradient steps", 100),  # train.eval_every
}


@dataclass
class Crash:
    """One killed process."""

    attempt: int
    resumed: bool  #: the killed process was a `--resume`
    delay_s: float  #: seconds it ran before the kill
    reached_steps: int  #: env steps it had reached (last whole episode logged)
    checkpoint_steps: int  #: env steps in the checkpoint left behind
    steps_lost: int
    corrupt_files: int
    stale_temp_files: int  #: leftovers of an interrupted atomic write (harmless)


def _events_files(run_dir: Path) -> set[Path]:
    return set(run_dir.glob("events.out.tfevents.*"))


def _last_step(paths: set[Path], tag: str) -> int | None:
    """The highest step logged under `tag` in `paths` (truncated records are skipped)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    best = None
    for path in paths:
        try:
            for event in EventFileLoader(str(path)).Load():
                if any(v.tag == tag for v in event.summary.value):
                    best = event.step if best is None else max(best, event.step)
        except Exception:  # noqa: BLE001 - a record cut by the kill ends the file
            continue
    return best


def check_files(run_dir: Path, command: str = "run") -> tuple[int, int | None, int]:
    """(corrupt files, checkpoint steps, stale temp files) of a run folder of `command`."""
    corrupt, steps, episode = 0, None, None
    try:
        load_config(run_dir)
    except WorldModelError:
        corrupt += 1
    try:
        _, meta = load_checkpoint(run_dir / CHECKPOINT_FILE)
        if command == "run":
            steps = int(meta["env_steps"])
            episode = int(meta["resume"]["counters"]["episode"])
        else:
            steps = int(meta["model_steps"])
    except (WorldModelError, KeyError, TypeError, ValueError):
        corrupt += 1
    try:
        store = EpisodeStore.load(run_dir / DATA_FILE)
        if episode is not None and store.next_episode < episode:
            corrupt += 1  # data older than the checkpoint: an episode would be missing
    except WorldModelError:
        corrupt += 1
    return corrupt, steps, len(list(run_dir.glob(".*.tmp")))


def _start(command: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agents.app.cli", *command], stdout=out, stderr=subprocess.STDOUT
        )


def _wait_for(proc: subprocess.Popen, ready) -> None:
    while proc.poll() is None and not ready():
        time.sleep(0.02)


def _restored(log_text: str) -> bool:
    """A resume that restored its checkpoint (or found its run finished: a kill after the last
    checkpoint, before the process exited)."""
    return "resuming" in log_text or "already complete" in log_text


@dataclass
class _Tally:
    """Counts of one crash test so far."""

    crashes: list[Crash] = field(default_factory=list)
    resumes_started: int = 0
    resumes_ok: int = 0
    runs_started: int = 0


def crash_test(
    kills: int,
    seed: int,
    workdir: Path,
    max_delay: float = 10.0,
    run_args: list[str] | None = None,
    command: str = "run",
) -> dict:
    """Kill and resume runs of `command` (run or train) until `kills` kills, then let the last
    finish; figures and crashes. `run_args` default to the command's short run.

    Each kill comes a random delay after the process is ready: a new run once its first
    checkpoint exists (before it there is nothing to resume), a resume once it has restored.
    Should a run finish before its kill, the remaining kills go to a new run.
    """
    spec = COMMANDS[command]
    run_args = spec.args if run_args is None else run_args
    rng, tally = np.random.default_rng(seed), _Tally()
    run_dir: Path | None = None
    for attempt in itertools.count():
        log, resumed = workdir / f"attempt{attempt}.log", run_dir is not None
        proc, run_dir, before = _launch(command, run_args, run_dir, workdir, log, tally)
        start_steps = check_files(run_dir, command)[1] or 0
        last = len(tally.crashes) == kills
        delay = float(rng.uniform(0.0, max_delay))
        started = time.perf_counter()
        rc = _wait_or_kill(proc, None if last else delay)
        text = log.read_text()
        if rc not in (None, 0):  # a failed resume (or run): report it and stop
            print(f"attempt {attempt} exited with {rc}:\n{text[-2000:]}", flush=True)
            break
        tally.resumes_ok += resumed and _restored(text)
        if rc == 0:
            if last:
                break
            print("the run finished before its kill; a new run starts", flush=True)
            run_dir = None
            continue
        reached = max(_last_step(_events_files(run_dir) - before, spec.tag) or 0, start_steps)
        crash = _record(run_dir, command, attempt, resumed, time.perf_counter() - started, reached)
        tally.crashes.append(crash)
        print(
            f"kill {len(tally.crashes):>2}: {delay:4.1f}s after "
            f"{'restore' if resumed else '1st ckpt'}, reached {reached:>5} steps, checkpoint "
            f"{crash.checkpoint_steps}, lost {crash.steps_lost}, corrupt {crash.corrupt_files}, "
            f"stale temp files {crash.stale_temp_files}",
            flush=True,
        )
    return _figures(tally, check_files(run_dir, command))


def _launch(
    command: str,
    run_args: list[str],
    run_dir: Path | None,
    workdir: Path,
    log: Path,
    tally: _Tally,
) -> tuple[subprocess.Popen, Path, set[Path]]:
    """A new run (`run_dir` None: ready at its first checkpoint) or a resume of `run_dir`
    (ready once restored); the process, its run folder and the events files before it."""
    if run_dir is None:
        runs = workdir / f"runs{tally.runs_started}"
        tally.runs_started += 1
        proc = _start([command, *run_args, "--runs_dir", str(runs)], log)
        _wait_for(proc, lambda: bool(list(runs.glob(f"*/{CHECKPOINT_FILE}"))))
        (run_dir,) = runs.iterdir()
        return proc, run_dir, set()
    before = _events_files(run_dir)
    proc = _start([command, "--resume", str(run_dir)], log)
    tally.resumes_started += 1
    _wait_for(proc, lambda: _restored(log.read_text()))
    return proc, run_dir, before


def _wait_or_kill(proc: subprocess.Popen, delay: float | None) -> int | None:
    """The exit status, or None once SIGKILLed `delay` seconds from now (None: never)."""
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def _record(
    run_dir: Path, command: str, attempt: int, resumed: bool, seconds: float, reached: int
) -> Crash:
    """What one kill left behind, against the steps the process had `reached`."""
    corrupt, steps, stale = check_files(run_dir, command)
    lost = max(reached - (steps or 0), 0)
    return Crash(attempt, resumed, round(seconds, 2), reached, steps or 0, lost, corrupt, stale)


def _figures(tally: _Tally, final: tuple[int, int | None, int]) -> dict:
    """The crash test's figures, with the files the last process left (`check_files`)."""
    crashes, (corrupt, steps, _) = tally.crashes, final
    return {
        "kills": len(crashes),
        "resumes_started": tally.resumes_started,
        "resumes_ok": tally.resumes_ok,
        "runs_started": tally.runs_started,
        "corrupt_files": sum(c.corrupt_files for c in crashes) + corrupt,
        "steps_lost": [c.steps_lost for c in crashes],
        "max_steps_lost": max((c.steps_lost for c in crashes), default=0),
        "final_steps": steps,
        "crashes": [asdict(c) for c in crashes],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=10.0, help="longest wait before a kill")
    parser.add_argument("--command", choices=sorted(COMMANDS), default="run")
    parser.add_argument(
        "--cost", choices=("exact", "learned"), default="exact",
        help="learned: the run fits (and checkpoints) a learned cost too",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="default: results/crash_resume*.csv")
    args = parser.parse_args(argv)
    from benchmarks.common import environment_info, write_csv

    spec = COMMANDS[args.command]
    suffix = ("" if args.command == "run" else f"_{args.command}") + (
        "_learned" if args.cost == "learned" else ""
    )
    out = args.out or Path(f"benchmarks/results/crash_resume{suffix}.csv")
    run_args = [*spec.args, "--cost", args.cost]
    start = time.perf_counter()
    with TemporaryDirectory(prefix="crash_resume_") as tmp:
        result = crash_test(
            args.kills, args.seed, Path(tmp), args.max_delay, run_args, command=args.command
        )
    print(
        f"resumes that worked: {result['resumes_ok']}/{result['resumes_started']}\n"
        f"corrupt files: {result['corrupt_files']}\n"
        f"steps lost per crash: {result['steps_lost']} (max {result['max_steps_lost']}, "
        f"checkpoint interval {spec.interval} {spec.unit})\n"
        f"finished at {result['final_steps']} {spec.unit}"
    )
    if result["crashes"]:
        info = environment_info([args.seed], time.perf_counter() - start)
        write_csv(out, result["crashes"], info | {k: v for k, v in result.items()
                                                       if k != "crashes"})  # fmt: skip
    return result


if __name__ == "__main__":
    main()
