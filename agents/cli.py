"""The `wm` command line. Bad input: one line on stderr, exit status 2 (`--debug`: traceback)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from agents.config import Config, flat_fields
from agents.configurator import make_config
from envs import TASKS, UnknownTaskError, make_task
from worldmodel.errors import ConfigError, WorldModelError

Command = Callable[[argparse.Namespace, dict[str, Any]], None]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit status 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per config field: --env, --seed, --model.hidden, --train.lr, ..."""
    for key, (kind, help_text) in flat_fields(Config).items():
        if kind is bool:
            parser.add_argument(
                f"--{key}",
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                f"--{key}",
                type=kind,
                default=argparse.SUPPRESS,
                metavar=kind.__name__.upper(),
                help=help_text,
            )


def _add_resume_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run of RUN_DIR from its last checkpoint (no other options)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = flat_fields(Config)
    return {k: v for k, v in vars(args).items() if k in fields}


def _resume_dir(args: argparse.Namespace, overrides: dict[str, Any]) -> Path:
    """The run folder of --resume; config options with it are an error (it has its own)."""
    if overrides:
        raise ConfigError(
            f"--resume continues with the run's own config.json; drop --{sorted(overrides)[0]}"
        )
    return Path(args.resume)


def _cmd_train(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    from agents.training import resume, train

    if args.resume is None:
        train(make_config(overrides))
        return
    resume(_resume_dir(args, overrides))


def _cmd_run(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    from agents.loop import resume, run

    if args.resume is None:
        run(make_config(overrides, command="run"))
        return
    resume(_resume_dir(args, overrides))


def _cmd_mpc(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    from agents.evaluation import mpc

    mpc(Path(args.run_dir), episodes=args.episodes, device=args.device, seed=args.seed)


def _cmd_eval_model(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    from agents.training import eval_model

    eval_model(Path(args.run_dir), device=args.device)


def _cmd_dream(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    from agents.dream import dream

    dream(
        Path(args.run_dir),
        agent=args.agent,
        steps=args.steps,
        seed=args.seed,
        video=args.video,
        device=args.device,
    )


def _cmd_tensorboard(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    from agents.inspection import launch_tensorboard

    launch_tensorboard(args.logdir, args.port)


def _cmd_tasks(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    for task in map(make_task, TASKS):
        print(f"{task.id:<22} obs {task.obs_dim:>3}  act {task.act_dim:>2}  {task.description}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wm", description="Learn world models from rollouts and control with them."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="collect random rollouts and train a world model")
    _add_config_options(train)
    _add_resume_option(train)
    train.set_defaults(func=_cmd_train)

    run = sub.add_parser("run", help="the model-based loop: act by MPC, learn, evaluate")
    _add_config_options(run)
    _add_resume_option(run)
    run.set_defaults(func=_cmd_run)

    mpc = sub.add_parser("mpc", help="run the MPC agent of a run folder and report its return")
    mpc.add_argument("run_dir", help="a run folder made by `wm run` or `wm train`")
    mpc.add_argument("--episodes", type=_positive_int, default=3, help="episodes to run")
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
    board.add_argument("--port", type=int, default=6006)
    board.set_defaults(func=_cmd_tensorboard)

    tasks = sub.add_parser("tasks", help="list the supported tasks")
    tasks.set_defaults(func=_cmd_tasks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        args.func(args, _overrides(args))
    except (WorldModelError, UnknownTaskError) as exc:
        if args.debug:
            raise
        print(f"wm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
