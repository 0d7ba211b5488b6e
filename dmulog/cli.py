"""The ``dmulog`` command: a router to the commands the installed parts provide.

Each part owns its command (``logsvc/cli.py``, ``bridge/cli.py``,
``dmulog/status.py``) and registers it under the entry-point group
``dmulog.commands`` (pyproject.toml). This module finds them there, so the
base package imports nothing of the parts above it and a part can be left
out of an install (a node needs no logsvc) without breaking the others.

``main(argv, env)`` returns an ExitStatus and maps every expected failure to
one; ``sys.exit`` lives only in ``__main__`` and :func:`main_exit`. Every option
can also come from an environment variable ``DMULOG_<OPTION>`` (the flag wins).
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TextIO

from dmulog import logs

__all__ = ["COMMAND_GROUP", "Command", "CommandError", "ExitStatus", "Option", "main", "main_exit"]

COMMAND_GROUP = "dmulog.commands"


class ExitStatus(enum.IntEnum):
    """Exit codes of ``dmulog``."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    UNAVAILABLE = 4
    MISSING_DEPENDENCY = 5
    PERMISSION = 6


class CommandError(Exception):
    """An expected failure of a command: the message for stderr and the exit status."""

    def __init__(self, status: ExitStatus, message: str):
        super().__init__(message)
        self.status = status


Option = Callable[..., None]
"""``option(flag, default, help, **argparse_kwargs)``: adds ``--flag`` whose default comes from ``DMULOG_FLAG``."""


@dataclass(frozen=True)
class Command:
    """One ``dmulog`` subcommand, as a part registers it.

    ``add(parser, option)`` declares its arguments; ``run(args, argv, out)`` does it
    and returns the exit status, raising CommandError for an expected failure.
    Both must be cheap to import: the router loads every command to build its help.
    """

    name: str
    order: int
    help: str
    description: str
    add: Callable[[argparse.ArgumentParser, Option], None]
    run: Callable[[argparse.Namespace, Sequence[str], TextIO], ExitStatus]


def _option_adder(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> Option:
    def option(flag: str, default: str | None, help: str, **kw: Any) -> None:
        var = "DMULOG_" + flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, default=env.get(var, default), help=f"{help} [env {var}; default: %(default)s]",
                            **kw)  # fmt: skip

    return option


def installed_commands() -> list[Command]:
    """Every command registered under ``dmulog.commands``, in their order."""
    found = [ep.load() for ep in entry_points(group=COMMAND_GROUP)]
    return sorted((c for c in found if isinstance(c, Command)), key=lambda c: (c.order, c.name))


def _parser(env: Mapping[str, str], commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmulog",
        description="A durable, shared dirty log for device-mapper mirrors (dm-log-userspace).",
        epilog="Run a logsvc (state in Redis), a bridge on every node with mirrors, then "
        "create mirrors with a 'userspace' log. See README.md.",
    )
    option = _option_adder(parser, env)
    option("--log-level", "info", "debug, info, warning or error")
    option("--log-format", "auto", "json, text, or auto (json unless stderr is a terminal)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        command.add(p, _option_adder(p, env))
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, *,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> ExitStatus:  # fmt: skip
    """Run ``dmulog`` and return its exit status; all error handling is here."""
    import grpc

    env = os.environ if env is None else env
    argv = list(sys.argv[1:] if argv is None else argv)
    out, err = stdout or sys.stdout, stderr or sys.stderr
    commands = {c.name: c for c in installed_commands()}
    try:
        args = _parser(env, list(commands.values())).parse_args(argv)
    except SystemExit as e:
        return ExitStatus.OK if e.code == 0 else ExitStatus.USAGE
    logs.configure(args.log_level, args.log_format)
    try:
        return commands[args.command].run(args, argv, out)
    except CommandError as e:
        err.write(f"{e}\n")
        return e.status
    except grpc.aio.AioRpcError as e:
        err.write(f"dmulog {args.command}: {e.code().name}: {e.details()}\n")
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return ExitStatus.NOT_FOUND
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return ExitStatus.UNAVAILABLE
        return ExitStatus.ERROR
    except OSError as e:
        err.write(f"dmulog {args.command}: {e}\n")
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        return ExitStatus.OK


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())
