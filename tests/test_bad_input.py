"""Every row of docs/errors.md: bad input gives one line on stderr naming what is wrong, exit
status 2, no traceback, and writes or overwrites nothing.

CLI rows run `agents.app.cli.main` in-process (one row also as a real subprocess); API rows call the
Python entry point and check it raises a one-line `WorldModelError`. Rows that need a run folder
get a private copy of one tiny trained run, which must be byte-identical afterwards.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from bad_inputs import (
    HELD_LOCKS,
    as_folder,
    broken_counter,
    cem_elites_over_population,
    config_text,
    deflate_damage,
    edit_config,
    edit_data,
    fake_tasks,
    fast_lr,
    garbage,
    gym_env_failing_to_make,
    gym_unbounded_env,
    hold_lock,
    model_wrong_action_shape,
    module_raising_on_import,
    mpc_nan_obs,
    mpc_wrong_obs_shape,
    nan_obs,
    nan_optimizer_state,
    nan_weights,
    newer_checkpoint,
    newer_data,
    no_dm_control,
    no_tensorboard,
    not_utf8,
    other_dims_data,
    other_task,
    policy_inf_obs,
    policy_wrong_obs_shape,
    read_only_run,
    resave_checkpoint,
    rollout_wrong_action_shape,
    store_nan_episode,
    store_zero_capacity,
    thousand_run_folders,
    truncate,
    unreadable,
)

import agents.app.train
from agents.app.cli import main
from agents.app.runs.folder import CHECKPOINT_FILE, CONFIG_FILE, DATA_FILE, load_world_model
from worldmodel.errors import WorldModelError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
TINY = [
    "--steps", "600", "--train.max_steps", "20", "--train.eval_every", "10",
    "--model.hidden", "32", "--train.batch_size", "32", "--no-progress", "--threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained Pendulum run (a few seconds); rows copy it before breaking it."""
    before = torch.get_num_threads()
    runs = tmp_path_factory.mktemp("good_runs")
    try:
        assert main(["train", "--runs_dir", str(runs), *TINY]) == 0
    finally:
        torch.set_num_threads(before)
    (run,) = runs.iterdir()
    return run


@pytest.fixture(scope="module")
def unfinished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny `wm train` stopped after its last validation's checkpoint, before it was marked
    complete: its checkpoint holds training state to resume from (optimiser included)."""
    before = torch.get_num_threads()
    runs = tmp_path_factory.mktemp("unfinished_runs")

    def stop() -> dict:
        raise KeyboardInterrupt

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(agents.app.train, "complete_state", stop)
            assert main(["train", "--runs_dir", str(runs), *TINY]) == 130
    finally:
        torch.set_num_threads(before)
    (run,) = runs.iterdir()
    return run


@pytest.fixture(autouse=True)
def release_held_locks() -> Iterator[None]:
    yield
    HELD_LOCKS.close()


# --- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One row of docs/errors.md.

    argv: CLI arguments; '{runs}' is a fresh (absent) runs folder, '{run}' a copy of the good
    run (of the fixture `source` names), '{file}' an existing regular file, '{port}' a port
    something listens on. call: an API entry point instead of argv.
    """

    id: str
    words: tuple[str, ...]
    argv: tuple[str, ...] = ()
    call: Callable[[], None] | None = None
    mutate: Callable[[Path], None] | None = None
    prepare: Callable[[Path, pytest.MonkeyPatch], None] | None = None
    marks: tuple = field(default=())
    source: str = "good_run"


TRAIN = ("train", "--runs_dir", "{runs}")
NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="mps works here")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="cuda works here")
NO_CUDA_7 = pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has cuda:7")
CASES = [
    # Unknown or unusable environments.
    Case("unknown-env", ("unknown environment", "Nope-v0", "Pendulum-v1"),
         (*TRAIN, "--env", "Nope-v0")),
    Case("unknown-env-run", ("unknown environment", "Nope-v0"),
         ("run", "--runs_dir", "{runs}", "--env", "Nope-v0")),
    Case("discrete-actions", ("Discrete(2) action space", "bounded Box"),
         (*TRAIN, "--env", "CartPole-v1"), prepare=lambda _r, mp: fake_tasks(mp)),
    Case("unbounded-actions", ("unbounded action space", "finite low/high"),
         (*TRAIN, "--env", "UnboundedPendulum-v1"), prepare=lambda _r, mp: fake_tasks(mp)),
    # Shapes and values of observations, actions and data (Python API).
    Case("obs-shape-mpc", ("observation has shape (5,)", "expects (3,)"),
         call=mpc_wrong_obs_shape),
    Case("obs-shape-policy", ("observation has shape (4,)", "expects (3,)"),
         call=policy_wrong_obs_shape),
    Case("obs-nan-mpc", ("observation contains NaN or inf",), call=mpc_nan_obs),
    Case("obs-inf-policy", ("observation contains NaN or inf",), call=policy_inf_obs),
    Case("action-shape-step", ("action has shape (8, 2)", "expects [..., 1]"),
         call=model_wrong_action_shape),
    Case("action-shape-rollout", ("action has shape (5, 8, 6)", "expects [..., 1]"),
         call=rollout_wrong_action_shape),
    Case("episode-inf", ("non-finite values in 'obs'",), call=store_nan_episode),
    Case("store-capacity-0", ("capacity must be positive",), call=store_zero_capacity),
    # Data files.
    Case("data-nan", ("NaN or inf in 'obs'", "re-collect"), ("eval-model", "{run}"),
         mutate=edit_data(nan_obs)),
    Case("data-truncated", ("data.npz is corrupt or incomplete", "re-collect"),
         ("eval-model", "{run}"), mutate=truncate(DATA_FILE)),
    Case("data-corrupt", ("data.npz is corrupt or incomplete",), ("eval-model", "{run}"),
         mutate=garbage(DATA_FILE)),
    Case("data-newer-format", ("has format 99", "upgrade worldmodel"), ("eval-model", "{run}"),
         mutate=edit_data(newer_data)),
    Case("data-other-dims", ("obs/action dims 10/2", "expects 3/1"), ("eval-model", "{run}"),
         mutate=other_dims_data),
    Case("data-missing", ("data file", "does not exist"), ("eval-model", "{run}"),
         mutate=lambda run: (run / DATA_FILE).unlink()),
    # Checkpoints.
    Case("checkpoint-truncated", ("corrupt or truncated", "train again"), ("eval-model", "{run}"),
         mutate=truncate(CHECKPOINT_FILE)),
    Case("checkpoint-truncated-mpc", ("corrupt or truncated",), ("mpc", "{run}", "--episodes", "1"),
         mutate=truncate(CHECKPOINT_FILE)),
    Case("checkpoint-corrupt", ("corrupt or truncated",), ("mpc", "{run}"),
         mutate=garbage(CHECKPOINT_FILE)),
    Case("checkpoint-missing", ("checkpoint", "does not exist"), ("mpc", "{run}"),
         mutate=lambda run: (run / CHECKPOINT_FILE).unlink()),
    Case("resume-train-run", ("holds no loop state", "wm run"), ("run", "--resume", "{run}")),
    Case("resume-with-options", ("--resume continues with the run's own", "drop --steps"),
         ("run", "--resume", "{run}", "--steps", "900")),
    Case("resume-missing", ("run folder", "does not exist"), ("run", "--resume", "{runs}/nope")),
    Case("train-resume-no-state", ("holds no training state", "wm run --resume"),
         ("train", "--resume", "{run}"), mutate=resave_checkpoint(lambda g, m: m.pop("train"))),
    Case("train-resume-other-task", ("is for Reacher-v5", "config.json is for Pendulum-v1"),
         ("train", "--resume", "{run}"), mutate=resave_checkpoint(other_task)),
    Case("train-resume-other-config", ("another config", "train.lr is 0.01 there, 0.001 in"),
         ("train", "--resume", "{run}"),
         mutate=resave_checkpoint(lambda g, m: m["config"]["train"].update(lr=0.01))),
    Case("train-resume-diverged", ("saved when training diverged", "start a new run"),
         ("train", "--resume", "{run}"),
         mutate=resave_checkpoint(lambda g, m: m.update(diverged=True))),
    Case("train-resume-newer-format", ("training state format 99, newer than 1", "upgrade"),
         ("train", "--resume", "{run}"),
         mutate=resave_checkpoint(lambda g, m: m["train"].update(version=99))),
    Case("train-resume-older-format", ("training state format 0, older than 1", "start anew"),
         ("train", "--resume", "{run}"),
         mutate=resave_checkpoint(lambda g, m: m["train"].update(version=0))),
    Case("train-resume-with-options", ("--resume continues with the run's own", "drop --steps"),
         ("train", "--resume", "{run}", "--steps", "900")),
    Case("train-resume-missing", ("run folder", "does not exist"),
         ("train", "--resume", "{runs}/nope")),
    Case("checkpoint-other-task", ("is for Reacher-v5", "config.json is for Pendulum-v1"),
         ("mpc", "{run}"), mutate=resave_checkpoint(other_task)),
    Case("checkpoint-other-dims", ("obs/action dims 5/1", "Pendulum-v1 has 3/1"), ("mpc", "{run}"),
         mutate=resave_checkpoint(lambda g, m: m.update(obs_dim=5))),
    Case("checkpoint-other-sizes", ("has shape", "expects", "other dimensions"),
         ("eval-model", "{run}"),
         mutate=resave_checkpoint(lambda g, m: m["config"]["model"].update(hidden=64))),
    Case("checkpoint-newer-format", ("format 99, newer than 1", "upgrade worldmodel"),
         ("eval-model", "{run}"), mutate=newer_checkpoint),
    Case("checkpoint-nan-weights", ("NaN or inf values", "diverged"), ("mpc", "{run}"),
         mutate=resave_checkpoint(nan_weights)),
    Case("checkpoint-nan-optimizer", ("optimiser state '0.exp_avg' has NaN or inf", "diverged"),
         ("train", "--resume", "{run}"), mutate=resave_checkpoint(nan_optimizer_state),
         source="unfinished_run"),
    Case("checkpoint-no-config", ("no valid config",), ("eval-model", "{run}"),
         mutate=resave_checkpoint(lambda g, m: m.pop("config"))),
    # Run folders.
    Case("run-folder-missing", ("run folder", "does not exist"), ("eval-model", "{runs}/nope")),
    Case("run-folder-missing-mpc", ("run folder", "does not exist"), ("mpc", "{runs}/nope")),
    Case("run-folder-missing-dream", ("run folder", "does not exist"),
         ("dream", "{runs}/nope", "--no-video")),
    Case("not-a-run-folder", ("checkpoint", "does not exist"), ("eval-model", "{runs}"),
         prepare=lambda _runs, _mp: None),
    Case("run-folders-exhausted", ("could not create a new run folder", "--name"),
         (*TRAIN, *TINY), prepare=thousand_run_folders),
    Case("run-folder-in-use", ("is in use by process", "(lock ", "wait for it or stop it"),
         ("run", "--resume", "{run}"), mutate=hold_lock),
    Case("run-folder-in-use-train", ("is in use by process", "wait for it or stop it"),
         ("train", "--resume", "{run}"), mutate=hold_lock),
    Case("runs-dir-is-a-file", ("cannot create a run folder", "--runs-dir"),
         ("train", "--runs_dir", "{file}", *TINY)),
    Case("bad-name", ("name 'a/b'", "another --name"), (*TRAIN, "--name", "a/b")),
    # Sizes and rates.
    Case("steps-zero", ("steps must be positive, got 0",), (*TRAIN, "--steps", "0")),
    Case("steps-negative", ("steps must be positive, got -5",), (*TRAIN, "--steps", "-5")),
    Case("lr-negative", ("lr must be positive, got -1.0",), (*TRAIN, "--train.lr", "-1")),
    Case("lr-nan", ("lr must be positive, got nan",), (*TRAIN, "--train.lr", "nan")),
    Case("lr-inf", ("train.lr must be a finite number",), (*TRAIN, "--train.lr", "inf")),
    Case("hidden-zero", ("hidden must be positive, got 0",), (*TRAIN, "--model.hidden", "0")),
    Case("batch-zero", ("batch_size must be positive, got 0",),
         (*TRAIN, "--train.batch_size", "0")),
    Case("horizon-zero", ("horizon must be positive, got 0",),
         ("run", "--runs_dir", "{runs}", "--planner.horizon", "0")),
    Case("population-negative", ("population must be positive, got -3",),
         ("run", "--runs_dir", "{runs}", "--planner.population", "-3")),
    Case("dropout-out-of-range", ("dropout must be in [0.0, 0.99], got 1.5",),
         (*TRAIN, "--model.dropout", "1.5")),
    Case("capacity-zero", ("capacity must be positive, got 0",),
         ("run", "--runs_dir", "{runs}", "--loop.capacity", "0")),
    Case("threads-negative", ("threads must be zero or positive",), (*TRAIN, "--threads", "-1")),
    Case("train-horizon-too-long", ("train.horizon 500 is longer than an episode",),
         (*TRAIN, "--train.horizon", "500")),
    Case("steps-below-horizon", ("steps 5 is fewer than train.horizon 10",),
         (*TRAIN, "--steps", "5")),
    Case("seed-steps-below-horizon", ("loop.seed_steps 5 is fewer than train.horizon 10",),
         ("run", "--runs_dir", "{runs}", "--loop.seed_steps", "5")),
    Case("seed-steps-over-budget", ("loop.seed_steps 5000 exceeds the budget 300",),
         ("run", "--runs_dir", "{runs}", "--steps", "300", "--loop.seed_steps", "5000")),
    Case("episodes-zero", ("--episodes: must be a positive integer, got 0",),
         ("mpc", "{run}", "--episodes", "0")),
    Case("dream-steps-zero", ("steps must be positive, got 0",),
         ("dream", "{run}", "--steps", "0", "--no-video")),
    # TensorBoard.
    Case("tensorboard-port-in-use", ("cannot serve on port", "pass another --port"),
         ("tensorboard", "--logdir", "{runs}", "--port", "{port}")),
    Case("tensorboard-bad-port", ("--port: must be a port in 1..65535, got 99999",),
         ("tensorboard", "--logdir", "{runs}", "--port", "99999")),
    Case("tensorboard-missing", ("TensorBoard is not installed", "pip install tensorboard"),
         ("tensorboard", "--logdir", "{runs}"), prepare=no_tensorboard),
    # Malformed command lines.
    Case("not-a-number", ("--steps: invalid int value: 'ten'", "--help"),
         (*TRAIN, "--steps", "ten")),
    Case("unknown-option", ("unrecognized arguments: --modle.hidden", "--help"),
         (*TRAIN, "--modle.hidden", "8")),
    Case("missing-run-argument", ("required: run_dir",), ("eval-model",)),
    Case("unknown-device", ("unknown device 'gpu7'",), ("mpc", "{run}", "--device", "gpu7")),
    # Any gymnasium env as a task (issue 18).
    Case("discrete-actions-any-env", ("'CartPole-v1' has a Discrete(2) action space",),
         ("run", "--runs_dir", "{runs}", "--env", "CartPole-v1")),
    Case("unbounded-actions-any-env", ("unbounded action space", "finite low/high"),
         (*TRAIN, "--env", "UnboundedPendulum-v0"), prepare=gym_unbounded_env),
    Case("env-module-missing", ("cannot import module 'no_such_pkg.envs'",
                                "ModuleNotFoundError", "PYTHONPATH"),
         (*TRAIN, "--env", "no_such_pkg.envs:MyEnv-v0")),
    Case("env-module-fails", ("cannot import module 'wm_broken_envs'",
                              "RuntimeError: no licence found"),
         (*TRAIN, "--env", "wm_broken_envs:MyEnv-v0"), prepare=module_raising_on_import),
    Case("env-module-no-env", ("module 'json' registers no env 'MyEnv-v0'",),
         (*TRAIN, "--env", "json:MyEnv-v0")),
    Case("env-cannot-be-made", ("cannot make environment 'Broken-v0'", "OSError: libfoo.so"),
         (*TRAIN, "--env", "Broken-v0"), prepare=gym_env_failing_to_make),
    Case("env-too-old", ("cannot make environment 'Hopper-v3'", "gymnasium-robotics"),
         (*TRAIN, "--env", "Hopper-v3")),
    Case("dm-control-missing", ("need dm_control and shimmy", "pip install"),
         (*TRAIN, "--env", "dm_control/cheetah-run-v0"), prepare=no_dm_control),
    # Learned cost and termination (issue 18).
    Case("exact-cost-missing", ("Swimmer-v5 has no exact cost", "--cost learned"),
         ("run", "--runs_dir", "{runs}", "--env", "Swimmer-v5", "--cost", "exact")),
    Case("unknown-cost", ("cost must be one of ('exact', 'learned'), got 'both'",),
         (*TRAIN, "--cost", "both")),
    Case("checkpoint-no-learned-cost", ("has no learned cost", "--cost learned"),
         ("mpc", "{run}"),
         mutate=resave_checkpoint(lambda g, m: m["config"].update(cost="learned"))),
    Case("stray-argument", ("wm eval-model: error: unrecognized arguments: extra",),
         ("eval-model", "{run}", "extra")),
    Case("odd-characters", ("unrecognized arguments: '\\x1b[2J'",),
         ("eval-model", "{run}", "\x1b[2J")),
    # A hand-edited or damaged config.json (read by --resume).
    Case("config-not-utf8", ("config.json is not a valid config", "can't decode", "restore it"),
         ("train", "--resume", "{run}"), mutate=not_utf8),
    Case("config-not-json", ("config.json is not a valid config (Expecting",),
         ("train", "--resume", "{run}"), mutate=config_text('{"env": "Pendulum-v1", ')),
    Case("config-not-object", ("the config must be a JSON object, got [1, 2]",),
         ("train", "--resume", "{run}"), mutate=config_text("[1, 2]")),
    Case("config-wrong-type", ("train.lr must be a number, got 'fast'",),
         ("train", "--resume", "{run}"), mutate=edit_config(fast_lr)),
    Case("config-is-a-folder", ("cannot read", "config.json (Is a directory)"),
         ("train", "--resume", "{run}"), mutate=as_folder(CONFIG_FILE)),
    Case("config-breaks-a-rule", ("config.json: planner.elites 50 is more than planner.",),
         ("run", "--resume", "{run}"), mutate=edit_config(cem_elites_over_population)),
    # Files that cannot be read, or are not what they should be.
    Case("data-zlib", ("data.npz is corrupt or incomplete", "decompressing", "re-collect"),
         ("eval-model", "{run}"), mutate=deflate_damage),
    Case("data-is-a-folder", ("data.npz is a folder, not a file",), ("eval-model", "{run}"),
         mutate=as_folder(DATA_FILE)),
    Case("checkpoint-is-a-folder", ("checkpoint.safetensors is a folder, not a file",),
         ("mpc", "{run}"), mutate=as_folder(CHECKPOINT_FILE)),
    Case("checkpoint-unreadable", ("checkpoint.safetensors: Permission denied", "make it"),
         ("eval-model", "{run}"), prepare=unreadable(CHECKPOINT_FILE)),
    Case("checkpoint-broken-counter", ("broken training counter 'total_steps' (-1)",),
         ("train", "--resume", "{run}"), mutate=resave_checkpoint(broken_counter),
         source="unfinished_run"),
    Case("read-only-run-folder", ("eval: Read-only file system", "writable one"),
         ("eval-model", "{run}"), prepare=read_only_run),
    # Seeds, devices, sizes and rules between options.
    Case("seed-negative-dream", ("seed -1 is out of range", "0..4294967295"),
         ("dream", "{run}", "--seed", "-1", "--no-video")),
    Case("seed-negative-mpc", ("seed -1 is out of range",), ("mpc", "{run}", "--seed", "-1")),
    Case("seed-too-large", ("seed 4294967296 is out of range",), (*TRAIN, "--seed", "4294967296")),
    Case("device-meta", ("device 'meta' holds shapes but no values",),
         ("mpc", "{run}", "--device", "meta")),
    Case("device-mps", ("device 'mps' cannot be used on this machine", "--device cpu"),
         (*TRAIN, "--device", "mps"), marks=(NO_MPS,)),
    Case("device-no-cuda", ("CUDA is not available", "--device cpu"),
         ("eval-model", "{run}", "--device", "cuda"), marks=(NO_CUDA,)),
    Case("device-cuda-index", ("device 'cuda:7' asked for",),
         ("dream", "{run}", "--device", "cuda:7", "--no-video"), marks=(NO_CUDA_7,)),
    Case("elites-over-population", ("planner.elites 50 is more than planner.population 10",),
         ("run", "--runs_dir", "{runs}", "--planner.kind", "cem", "--planner.population", "10",
          "--planner.elites", "50")),
    Case("batch-size-huge", ("train.batch_size 10000000 needs about", "lower --train.batch-size"),
         (*TRAIN, "--train.batch-size", "10000000")),
    Case("hidden-huge", ("model.hidden 1000000 needs about", "lower --model.hidden"),
         (*TRAIN, "--model.hidden", "1000000")),
    Case("steps-huge", ("for the data", "lower --steps"), (*TRAIN, "--steps", "100000000000")),
    Case("envs-huge", ("envs 10000000 needs about", "lower --envs"),
         ("run", "--runs_dir", "{runs}", "--envs", "10000000")),
    Case("int-too-large", ("train.max_steps 99999999999999999999 does not fit in a 64-bit",),
         (*TRAIN, "--train.max-steps", "99999999999999999999")),
    Case("threads-too-many", ("threads 100000 is more than the", "CPU cores"),
         (*TRAIN, "--threads", "100000")),
]  # fmt: skip


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Everything under `root`: relative path -> bytes (None for a folder); {} if root is absent."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def _expand(argv: tuple[str, ...], subs: dict[str, str]) -> list[str]:
    return [re.sub(r"\{[a-z]+\}", lambda m: subs[m.group()], a) for a in argv]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case: Case,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case.call is not None:
        with pytest.raises(WorldModelError) as info:
            case.call()
        message = str(info.value)
        assert "\n" not in message
        for word in case.words:
            assert word in message, (word, message)
        return

    runs = tmp_path / "runs"
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n")
    run = None
    if "{run}" in " ".join(case.argv):
        run = tmp_path / "run"
        shutil.copytree(request.getfixturevalue(case.source), run)
        if case.mutate is not None:
            case.mutate(run)
    if case.prepare is not None:
        runs.mkdir()
        case.prepare(runs, monkeypatch)
    before = {"runs": _snapshot(runs), "run": _snapshot(run) if run else {}}
    capsys.readouterr()

    subs = {"{runs}": str(runs), "{run}": str(run), "{file}": str(a_file)}
    if "{port}" in " ".join(case.argv):
        subs["{port}"] = str(request.getfixturevalue("taken_port"))
    code = main(_expand(case.argv, subs))

    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err, out)
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("wm"), err
    for word in case.words:
        assert word in lines[0], (word, lines[0])
    assert _snapshot(runs) == before["runs"], "a runs folder was written"
    assert run is None or _snapshot(run) == before["run"], "the run folder was modified"
    assert a_file.read_text() == "not a folder\n"


# Rows whose exit status is not 2, or that write (disk full part-way): each has its own test.
OTHER_ROWS = {
    "run-folder-exists": "tests/test_bad_input.py::"
    "test_existing_run_folder_gets_a_new_name_and_is_never_overwritten",
    "internal-error": "tests/agents/app/test_boundary.py::"
    "test_an_internal_error_in_a_command_exits_1_and_debug_shows_it",
    "disk-full": "tests/agents/app/test_disk_full.py::"
    "test_train_disk_full_at_a_checkpoint_keeps_the_last_one_and_resumes_exactly",
    "disk-full-data": "tests/agents/app/test_disk_full.py::"
    "test_run_disk_full_writing_data_keeps_data_and_checkpoint_and_resumes",
}


def test_docs_table_has_a_row_per_case() -> None:
    text = DOCS.read_text()
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.MULTILINE))
    assert rows == {c.id for c in CASES} | set(OTHER_ROWS)
    root = DOCS.parents[1]
    for test in OTHER_ROWS.values():  # each exists where the table says
        path, name = test.split("::")
        assert f"def {name}(" in (root / path).read_text(), test


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(WorldModelError, match="unknown environment"):
        main(["--debug", "train", "--env", "Nope-v0", "--runs_dir", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()


def test_truncated_checkpoint_in_a_real_process_exits_2(good_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    truncate(CHECKPOINT_FILE)(run)
    before = _snapshot(run)
    result = subprocess.run(
        [sys.executable, "-m", "agents.app.cli", "eval-model", str(run), "--device", "cpu"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt or truncated" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(run) == before


def test_existing_run_folder_gets_a_new_name_and_is_never_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Row `run-folder-exists`: not an error (exit 0); the new run goes to '<name>-1'."""
    monkeypatch.setattr("agents.app.runs.folder.time.strftime", lambda _fmt: "20250101-000000")
    runs = tmp_path / "runs"
    taken = runs / "Pendulum-v1__train__0__20250101-000000"
    taken.mkdir(parents=True)
    (taken / CONFIG_FILE).write_text('{"mine": true}\n')
    before = _snapshot(taken)
    assert main(["train", "--runs_dir", str(runs), *TINY]) == 0
    assert _snapshot(taken) == before
    fresh = runs / "Pendulum-v1__train__0__20250101-000000-1"
    assert (fresh / CHECKPOINT_FILE).is_file() and str(fresh) in capsys.readouterr().out
    assert sorted(p.name for p in runs.iterdir()) == [taken.name, fresh.name]
    load_world_model(fresh)  # the new run is complete and loads
