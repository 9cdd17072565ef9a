"""The crash test of `benchmarks/crash_resume.py`, small: 2 SIGKILLs of a short real run (of
`wm run`, then of `wm train`)."""

from pathlib import Path

import pytest

from benchmarks.crash_resume import RUN_ARGS, TRAIN_ARGS, crash_test

SHORT = [*RUN_ARGS]
SHORT[SHORT.index("--steps") + 1] = "800"
SHORT[SHORT.index("--loop.first_train_steps") + 1] = "20"
SHORT[SHORT.index("--loop.train_steps") + 1] = "10"
SHORT_TRAIN = [*TRAIN_ARGS]
SHORT_TRAIN[SHORT_TRAIN.index("--train.max_steps") + 1] = "600"


@pytest.mark.slow
def test_killed_runs_resume_without_corrupt_files_or_lost_intervals(tmp_path: Path) -> None:
    result = crash_test(kills=2, seed=0, workdir=tmp_path, max_delay=2.0, run_args=SHORT)
    assert result["kills"] == 2
    assert result["resumes_ok"] == result["resumes_started"] >= 2
    assert result["corrupt_files"] == 0
    assert result["max_steps_lost"] <= 200  # one checkpoint interval: a Pendulum episode
    assert result["final_steps"] == 800


@pytest.mark.slow
def test_killed_train_runs_resume_without_corrupt_files_or_lost_intervals(tmp_path: Path) -> None:
    result = crash_test(
        kills=2, seed=0, workdir=tmp_path, max_delay=2.0, run_args=SHORT_TRAIN, command="train"
    )
    assert result["kills"] == 2
    assert result["resumes_ok"] == result["resumes_started"] >= 2
    assert result["corrupt_files"] == 0
    assert result["max_steps_lost"] <= 100  # one checkpoint interval: train.eval_every
    assert result["final_steps"] == 600
