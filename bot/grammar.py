"""The ``/ops`` command grammar (design.md, 'Command grammar'), with ``shlex`` and ``argparse``.

:func:`parse` turns the text after ``/ops`` into a :class:`Command` or raises
:class:`CommandError`, whose message says what was wrong and ends with the usage line. Each request
kind has one entry in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from actions.restart import RestartParams
from actions.workloads import parse_workload

# Slack turns straight quotes into typographic ones on many keyboards; shlex needs straight ones.
_DOUBLE_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"'})
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


def _split(text: str) -> list[str]:
    """Split as a shell does, reading typographic quotes as straight ones; when that leaves a
    quote open, a typographic apostrophe (don\u2019t) is read as a letter instead."""
    try:
        return shlex.split(text.translate(_QUOTES))
    except ValueError:
        try:
            return shlex.split(text.translate(_DOUBLE_QUOTES))
        except ValueError as exc:
            raise CommandError(f"Cannot read the command ({exc}).\n{usage()}") from exc


class CommandError(ValueError):
    """The command text is not valid; ``str()`` is the answer for the requester, usage included."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CommandError(message)


@dataclass(frozen=True)
class Command:
    """A parsed ``/ops`` command. ``params`` is set for request kinds; ``request_id`` for status
    (None: the requester's latest requests)."""

    name: str
    params: BaseModel | None = None
    namespace: str | None = None
    env: str | None = None
    reason: str | None = None
    request_id: int | None = None


@dataclass(frozen=True)
class Subcommand:
    usage: str
    summary: str
    configure: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], Command]


def _request_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--env")
    parser.add_argument("--reason")


def _restart_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload")
    _request_options(parser)


def _restart_build(ns: argparse.Namespace) -> Command:
    kind, name = parse_workload(ns.workload)
    params = RestartParams(name=name, kind=kind, namespace=ns.namespace)
    return Command("restart", params=params, namespace=ns.namespace, env=ns.env, reason=ns.reason)


def _status_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("request_id", type=int, nargs="?")


def _status_build(ns: argparse.Namespace) -> Command:
    return Command("status", request_id=ns.request_id)


SUBCOMMANDS: dict[str, Subcommand] = {
    "restart": Subcommand(
        "/ops restart <workload> -n <namespace> [--env ENV] [--reason TEXT]",
        "rolling restart of a Deployment, StatefulSet or DaemonSet (name or kind/name)",
        _restart_args,
        _restart_build,
    ),
    "status": Subcommand(
        "/ops status [REQUEST_ID]",
        "where a request stands (without an ID: your latest requests)",
        _status_args,
        _status_build,
    ),
}


def usage(name: str | None = None) -> str:
    """The usage line of one subcommand, or of all of them."""
    if name in SUBCOMMANDS:
        return f"Usage: `{SUBCOMMANDS[name].usage}`"
    lines = ["/ops help"] + [sub.usage for sub in SUBCOMMANDS.values()]
    return "Usage:\n" + "\n".join(f"`{line}`" for line in lines)


def help_text() -> str:
    """The answer to ``/ops help``."""
    lines = ["*opsgate*: Day 2 operations through an approval gate. Commands:"]
    lines += [f"• `{sub.usage}`: {sub.summary}" for sub in SUBCOMMANDS.values()]
    lines.append("• `/ops help`: this message")
    return "\n".join(lines)


def parse(text: str) -> Command:
    """Parse the text after ``/ops``. Raises :class:`CommandError` with the usage line."""
    words = _split(text)
    if not words or words[0] == "help":
        return Command("help")
    name, rest = words[0], words[1:]
    sub = SUBCOMMANDS.get(name)
    if sub is None:
        raise CommandError(f"Unknown command `{name}`.\n{usage()}")
    parser = _Parser(prog=f"/ops {name}", add_help=False, exit_on_error=False)
    sub.configure(parser)
    try:
        namespace = parser.parse_args(rest)
        return sub.build(namespace)
    except (CommandError, argparse.ArgumentError) as exc:
        raise CommandError(f"{exc}.\n{usage(name)}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise CommandError(f"{problems}.\n{usage(name)}") from exc
    except ValueError as exc:
        raise CommandError(f"{exc}.\n{usage(name)}") from exc
