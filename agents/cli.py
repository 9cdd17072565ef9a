"""The `wm` command line. Bad input: one line on stderr, exit status 2 (`--debug`: traceback)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.config import Config, flat_fields
from agents.configurator import make_config
from envs import TASKS, UnknownTaskError, make_task
from worldmodel.errors import WorldModelError

Command = Callable[[argparse.Namespace, dict[str, Any]], None]


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per config field: --env, --seed, --model.hidden, --train.lr, ..."""
    for key, (kind, help_text) in flat_fields(Config).items():
        if kind is bool:
            parser.add_argument(f"--{key}", action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)  # fmt: skip
        else:
            parser.add_argument(f"--{key}", type=kind, default=argparse.SUPPRESS,
                                metavar=kind.__name__.upper(), help=help_text)  # fmt: skip


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = flat_fields(Config)
    return {k: v for k, v in vars(args).items() if k in fields}


def _cmd_train(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    from agents.training import train

    train(make_config(overrides))


def _cmd_eval_model(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    from agents.training import eval_model

    eval_model(Path(args.run_dir), device=args.device)


def _cmd_tasks(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    for task in map(make_task, TASKS):
        print(f"{task.id:<22} obs {task.obs_dim:>3}  act {task.act_dim:>2}  {task.description}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wm", description="Learn world models from rollouts and control with them."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="collect random rollouts and train a world model")
    _add_config_options(train)
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser("eval-model", help="k-step error of a trained model vs baseline")
    evaluate.add_argument("run_dir", help="a run folder made by `wm train`")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.set_defaults(func=_cmd_eval_model)

    tasks = sub.add_parser("tasks", help="list the supported tasks")
    tasks.set_defaults(func=_cmd_tasks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
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
