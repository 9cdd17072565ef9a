"""The `wm` command line. Bad input: one line on stderr, exit status 2; a fault of worldmodel
itself: one line, exit status 1 (`boundary.py`; `--debug`: the traceback).

argparse parses the commands and their own arguments; tyro parses the config options of `wm
train` and `wm run` from the `Config` dataclasses, whose field docstrings are their --help texts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import operator
import os
import re
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

import tyro

from agents.app.boundary import describe, printable, quiet_writer_threads
from agents.configurator import make_config
from agents.configurator.config import Config
from agents.configurator.fields import flat_fields
from envs import TASKS, make_task
from envs.registry import ANY_ENV_NOTE
from envs.render import use_headless_gl
from worldmodel.errors import ConfigError, WorldModelError

Command = Callable[[argparse.Namespace, list[str]], None]
# The commands whose options are a config (parsed by tyro), with their one-line help.
CONFIG_COMMANDS = {
    "train": "collect random rollouts and train a world model",
    "run": "the model-based loop: act by MPC, learn, evaluate",
}
_PRESETS_NOTE = "Per-task presets apply under these options; the defaults shown are before them."
_CONFIG_KEYS = frozenset(flat_fields(Config))
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# tyro's words -> argparse's, which the other commands' usage errors and docs/errors.md use.
_ARGPARSE_WORDS = (
    (r"^Error parsing (--\S+):", r"argument \1:"),
    (r"^Missing value for argument '(--\S+)'\..*", r"argument \1: expected one argument"),
    (r"invalid literal for int\(\) with base 10:", "invalid int value:"),
    (r"could not convert string to float:", "invalid float value:"),
)


def _usage_error(prog: str, message: str) -> NoReturn:
    """Usage errors as one line on stderr and exit status 2, like every other bad input."""
    print(printable(f"{prog}: error: {message}; see `{prog} --help`"), file=sys.stderr)
    raise SystemExit(2)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviations: `--ep 3` would silently mean --episodes, and a token such as `--=1`
        # would be refused by the top-level parser as ambiguous, before the command is known.
        super().__init__(*args, **kwargs, allow_abbrev=False)

    def error(self, message: str) -> NoReturn:
        _usage_error(self.prog, message)


def _positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _port(text: str) -> int:
    """argparse type: a TCP port, 1..65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port in 1..65535, got {value}")
    return value


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that `finally` blocks run (run-folder lock released,
    logs flushed, TensorBoard's child stopped), as they do for Ctrl-C. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way swallows it."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` for the block (the main thread only can catch signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class _Options:
    """What `wm train` and `wm run` take: a new run's config, or --resume."""

    resume: Annotated[str | None, tyro.conf.arg(metavar="RUN_DIR")] = None
    """continue the run of RUN_DIR from its last checkpoint (no other options)"""
    # name="": the config's fields are top-level options (--env, --train.lr), not --config.env.
    config: Annotated[Config, tyro.conf.arg(name="")] = field(default_factory=Config)


def _parse_options(command: str, tokens: list[str]) -> tuple[str | None, dict[str, Any]]:
    """The --resume folder and the config overrides of `wm <command>`; `--help` exits 0."""
    prog = f"wm {command}"
    boxed = io.StringIO()
    try:
        with contextlib.redirect_stderr(boxed):  # tyro draws its errors as multi-line boxes
            options, unknown = tyro.cli(
                _Options,
                args=tokens,
                prog=prog,
                description=f"{CONFIG_COMMANDS[command]}. {_PRESETS_NOTE}",
                default=_Options(config=Config(name=command)),
                return_unknown_args=True,
            )
    except SystemExit as exc:
        if exc.code == 0:
            raise
        if (cause := _config_error(exc)) is not None:
            raise cause from None  # a value out of range: worded by the config, as everywhere
        _usage_error(prog, _one_line(boxed.getvalue()))
    sys.stderr.write(boxed.getvalue())  # tyro's warnings, if any
    if unknown:
        _usage_error(prog, f"unrecognized arguments: {shlex.join(unknown)}")
    config = options.config
    return options.resume, {key: operator.attrgetter(key)(config) for key in _given(tokens)}


def _given(tokens: Sequence[str]) -> list[str]:
    """The config keys that tokens such as `--train.max-steps`, `--runs_dir=x`, `--no-video` name.

    tyro fills in every field, so the options given are told from the defaults here: only they
    may override the task's presets. tyro takes no `--` token as a value, so each names an option.
    """
    keys = []
    for token in tokens:
        if token.startswith("--"):
            path = token[2:].partition("=")[0].replace("-", "_")
            group, dot, name = path.rpartition(".")
            negated = f"{group}{dot}{name.removeprefix('no_')}"  # --no-video, --planner.no-...
            keys += [key for key in (path, negated) if key in _CONFIG_KEYS][:1]
    return keys


def _config_error(exc: BaseException) -> WorldModelError | None:
    """The config's own error (a value out of range) that tyro caught before it exited, if any."""
    cause = exc.__context__
    while cause is not None and not isinstance(cause, WorldModelError):
        cause = cause.__cause__ or cause.__context__
    return cause


def _one_line(boxed: str) -> str:
    """tyro's boxed error as one line: the box's first paragraph (the rest repeats --help)."""
    lines: list[str] = []
    for line in _ANSI.sub("", boxed).splitlines()[1:]:  # [0] is the box's title
        text = line.strip(" │")
        if text.strip("─-╰╯"):
            lines.append(text)
        elif lines:
            break
    message = " ".join(lines).rstrip(".") or "invalid options"
    for pattern, words in _ARGPARSE_WORDS:
        message = re.sub(pattern, words, message)
    return message


def _resume_dir(run_dir: str, overrides: dict[str, Any]) -> Path:
    """The run folder of --resume; config options with it are an error (it has its own)."""
    if overrides:
        option = sorted(overrides)[0].replace("_", "-")
        raise ConfigError(f"--resume continues with the run's own config.json; drop --{option}")
    return Path(run_dir)


def _cmd_train(args: argparse.Namespace, options: list[str]) -> None:
    run_dir, overrides = _parse_options("train", options)
    from agents.app.train import resume, train

    if run_dir is None:
        train(make_config(overrides))
        return
    resume(_resume_dir(run_dir, overrides))


def _cmd_run(args: argparse.Namespace, options: list[str]) -> None:
    run_dir, overrides = _parse_options("run", options)
    from agents.app.loop import resume, run

    if run_dir is None:
        run(make_config(overrides, command="run"))
        return
    resume(_resume_dir(run_dir, overrides))


def _cmd_mpc(args: argparse.Namespace, options: list[str]) -> None:
    from agents.app.evaluate import mpc

    mpc(
        Path(args.run_dir),
        episodes=args.episodes,
        device=args.device,
        seed=args.seed,
        envs=args.envs,
    )


def _cmd_eval_model(args: argparse.Namespace, options: list[str]) -> None:
    from agents.app.train import eval_model

    eval_model(Path(args.run_dir), device=args.device)


def _cmd_dream(args: argparse.Namespace, options: list[str]) -> None:
    from agents.app.dream import dream

    dream(
        Path(args.run_dir),
        agent=args.agent,
        steps=args.steps,
        seed=args.seed,
        video=args.video,
        device=args.device,
    )


def _cmd_tensorboard(args: argparse.Namespace, options: list[str]) -> None:
    from agents.app.media.inspection import launch_tensorboard

    status = launch_tensorboard(args.logdir, args.port)
    if status:  # TensorBoard's own failure, already reported by it: pass its status on
        raise SystemExit(status)


def _cmd_tasks(args: argparse.Namespace, options: list[str]) -> None:
    for task in map(make_task, TASKS):
        print(f"{task.id:<22} obs {task.obs_dim:>3}  act {task.act_dim:>2}  {task.description}")
    print(ANY_ENV_NOTE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wm", description="Learn world models from rollouts and control with them."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)

    # Their options, --help included, go on to tyro (`_parse_options`).
    for name, func in (("train", _cmd_train), ("run", _cmd_run)):
        command = sub.add_parser(name, help=CONFIG_COMMANDS[name], add_help=False)
        command.set_defaults(func=func)

    mpc = sub.add_parser("mpc", help="run the MPC agent of a run folder and report its return")
    mpc.add_argument("run_dir", help="a run folder made by `wm run` or `wm train`")
    mpc.add_argument("--episodes", type=_positive_int, default=3, help="episodes to run")
    mpc.add_argument(
        "--envs", type=_positive_int, default=1, help="episodes side by side (vector env)"
    )
    mpc.add_argument("--seed", type=int, default=0, help="seed of the episodes and the planner")
    mpc.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    mpc.set_defaults(func=_cmd_mpc)

    evaluate = sub.add_parser("eval-model", help="k-step error of a trained model vs baseline")
    evaluate.add_argument("run_dir", help="a run folder made by `wm train`")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.set_defaults(func=_cmd_eval_model)

    dream = sub.add_parser("dream", help="run an agent inside a learned model; log its video")
    dream.add_argument("run_dir", help="a run folder with a trained world model")
    dream.add_argument("--agent", default="random", help="random or mpc (the run's planner)")
    dream.add_argument("--steps", type=int, default=200, help="simulated steps")
    dream.add_argument("--seed", type=int, default=0, help="seed of starts, latents and actions")
    dream.add_argument(
        "--video",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log a video to RUN_DIR/dream",
    )
    dream.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    dream.set_defaults(func=_cmd_dream)

    board = sub.add_parser("tensorboard", help="serve run folders on http://127.0.0.1 only")
    board.add_argument("--logdir", default="runs", help="folder of run folders")
    board.add_argument("--port", type=_port, default=6006, help="port on 127.0.0.1")
    board.set_defaults(func=_cmd_tensorboard)

    tasks = sub.add_parser("tasks", help="list the supported tasks")
    tasks.set_defaults(func=_cmd_tasks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    use_headless_gl()  # before any env is made: MuJoCo reads MUJOCO_GL once
    parser = build_parser()
    try:
        # Only train and run take options argparse does not know: their config options.
        args, options = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
        if options and args.command not in CONFIG_COMMANDS:
            _usage_error(f"wm {args.command}", f"unrecognized arguments: {shlex.join(options)}")
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with _sigterm_raises(), contextlib.ExitStack() as stack:
            if not args.debug:
                stack.enter_context(quiet_writer_threads())
            args.func(args, options)
    except SystemExit as exc:  # `wm train --help` (0) or a bad option (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    except KeyboardInterrupt:
        print(f"wm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"wm {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:  # `wm tasks | head`: the reader left, nothing is wrong
        # Python would report the pipe again while flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # the boundary: bad input (2) or a fault of worldmodel (1)
        if args.debug:
            raise
        status, line = describe(exc, args.command)
        print(printable(line), file=sys.stderr)
        return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
