"""The ``/ops`` command grammar (README.md, 'Commands'), with ``shlex`` and ``argparse``.

:func:`parse` turns the text after ``/ops`` into a :class:`Command` or raises
:class:`CommandError`, whose message says what was wrong and ends with the usage line. Each request
kind has one entry in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from actions.access import AccessParams
from actions.restart import RestartParams
from actions.rollback import RollbackParams
from actions.rotate import RestoreParams, RotateParams
from actions.scale import ScaleParams
from actions.workloads import WorkloadKind, parse_workload
from approvals.extend import ExtendParams
from approvals.paging import MAX_PAGE
from approvals.policy import parse_duration
from bot.mrkdwn import unescape

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
    """A parsed ``/ops`` command.

    ``params`` is set for request kinds (the kind's pydantic params model); ``namespace``, ``env``,
    ``path``, ``reason`` and ``break_glass`` (the break-glass justification) are what the policy
    matches on. ``request_id`` is for status (None: the requester's latest requests);
    ``grant_id`` for revoke and extend; ``page`` (1-based) is the page of a list answer
    (``status`` without an ID, ``grants``); ``name`` is the command word.
    """

    name: str
    params: BaseModel | None = None
    namespace: str | None = None
    env: str | None = None
    reason: str | None = None
    request_id: int | None = None
    path: str | None = None
    break_glass: str | None = None
    grant_id: int | None = None
    workload: str | None = None
    page: int = 1


@dataclass(frozen=True)
class Subcommand:
    usage: str
    summary: str
    configure: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], Command]


def _request_options(parser: argparse.ArgumentParser, *, namespace: bool = True) -> None:
    if namespace:
        parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--env")
    parser.add_argument("--reason")
    parser.add_argument("--break-glass", dest="break_glass", metavar="REASON")


def _request(name: str, params: BaseModel, ns: argparse.Namespace, **extra: Any) -> Command:
    """A request command; a break-glass justification is also the reason when none is given."""
    reason = ns.reason if ns.reason is not None else ns.break_glass
    return Command(
        name,
        params=params,
        namespace=getattr(ns, "namespace", None),
        env=ns.env,
        reason=reason,
        break_glass=ns.break_glass,
        **extra,
    )


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


MAX_ID = 2**31 - 1
"""The largest request or grant ID, replica count or revision opsgate accepts: a 32-bit
signed integer, as PostgreSQL's ``integer`` and Kubernetes' ``int32`` replicas."""


def parse_id(text: str, what: str) -> int:
    """``text`` (ASCII digits, optionally after ``#``) as an ID between 1 and :data:`MAX_ID`.

    Raises ``ValueError`` with a message for the person (``what``: "request ID", "grant ID")
    for anything else, so no out-of-range number ever reaches the database.
    """
    digits = text.strip().removeprefix("#")
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"'{text}' is not a {what}: use its number, e.g. 42")
    value = int(digits)
    if not 1 <= value <= MAX_ID:
        raise ValueError(f"{what}s go from 1 to {MAX_ID}; there is no {what} {digits}")
    return value


def _number(text: str, what: str, low: int) -> int:
    """``text`` as an integer between ``low`` and :data:`MAX_ID` (argparse's type error)."""
    if not (text.isascii() and text.lstrip("-").isdigit()):
        raise argparse.ArgumentTypeError(f"'{text}' is not a {what}")
    value = int(text)
    if not low <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"a {what} must be between {low} and {MAX_ID}")
    return value


def _replicas(text: str) -> int:
    if text.startswith("-") and text[1:].isdigit():
        raise argparse.ArgumentTypeError("replicas cannot be negative")
    return _number(text, "number of replicas", 0)


def _revision(text: str) -> int:
    if text.isascii() and text.lstrip("-").isdigit() and int(text) < 1:
        raise argparse.ArgumentTypeError("revisions start at 1")
    return _number(text, "revision number", 1)


def _restart_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload")
    _request_options(parser)


def _restart_build(ns: argparse.Namespace) -> Command:
    kind, name = parse_workload(ns.workload)
    return _request("restart", RestartParams(name=name, kind=kind, namespace=ns.namespace), ns)


def _scale_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload")
    parser.add_argument("replicas", type=_replicas)
    _request_options(parser)


def _scale_build(ns: argparse.Namespace) -> Command:
    kind, name = parse_workload(ns.workload)
    if kind is WorkloadKind.DAEMONSET:
        raise ValueError("a DaemonSet cannot be scaled (it runs one pod per node)")
    params = ScaleParams(name=name, kind=kind, namespace=ns.namespace, replicas=ns.replicas)
    return _request("scale", params, ns)


def _deployment_name(text: str) -> str:
    kind, name = parse_workload(text)
    if kind not in (None, WorkloadKind.DEPLOYMENT):
        raise ValueError(f"only Deployments have a rollout history ('{text}' is a {kind})")
    return name


def _rollback_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("deployment")
    parser.add_argument("--to-revision", dest="to_revision", type=_revision)
    _request_options(parser)


def _rollback_build(ns: argparse.Namespace) -> Command:
    params = RollbackParams(
        name=_deployment_name(ns.deployment), namespace=ns.namespace, to_revision=ns.to_revision
    )
    return _request("rollback", params, ns)


def _history_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("deployment")
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--env")


def _history_build(ns: argparse.Namespace) -> Command:
    return Command(
        "history", namespace=ns.namespace, env=ns.env, workload=_deployment_name(ns.deployment)
    )


def _access_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("namespace")
    parser.add_argument("--role")
    parser.add_argument("--for", dest="duration", type=_duration, metavar="DURATION")
    _request_options(parser, namespace=False)


def _access_build(ns: argparse.Namespace) -> Command:
    params = AccessParams(namespace=ns.namespace, role=ns.role, duration_seconds=ns.duration)
    return _request("access", params, ns)


def _rotate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path")
    parser.add_argument("--key")
    parser.add_argument("--restart", metavar="WORKLOADS")
    parser.add_argument("-n", "--namespace")
    _request_options(parser, namespace=False)


def _rotate_build(ns: argparse.Namespace) -> Command:
    restart = tuple(w.strip() for w in (ns.restart or "").split(",") if w.strip())
    if restart and ns.namespace is None:
        raise ValueError("--restart needs the workloads' namespace: add -n <namespace>")
    for workload in restart:
        parse_workload(workload)
    path = ns.path.strip("/")
    params = RotateParams(path=path, key=ns.key, restart=restart, namespace=ns.namespace)
    return _request("rotate", params, ns, path=path)


def _restore_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path")
    parser.add_argument("--to-version", dest="to_version", type=_revision, required=True)
    _request_options(parser, namespace=False)


def _restore_build(ns: argparse.Namespace) -> Command:
    path = ns.path.strip("/")
    params = RestoreParams(path=path, to_version=ns.to_version)
    return _request("restore", params, ns, path=path)


def _page(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a page number") from None
    if not 1 <= value <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"pages are numbered from 1 to {MAX_PAGE:,}")
    return value


def _page_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page", type=_page, default=1, metavar="N")


def _status_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("request_id", type=_request_id, nargs="?")
    _page_option(parser)


def _status_build(ns: argparse.Namespace) -> Command:
    if ns.request_id is not None and ns.page != 1:
        raise ValueError("--page pages through your latest requests; leave out the request ID")
    return Command("status", request_id=ns.request_id, page=ns.page)


def _grants_build(ns: argparse.Namespace) -> Command:
    return Command("grants", page=ns.page)


def _grant_id(text: str) -> int:
    try:
        return parse_id(text, "grant ID")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _request_id(text: str) -> int:
    try:
        return parse_id(text, "request ID")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _revoke_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grant_id", type=_grant_id)
    parser.add_argument("--reason")


def _revoke_build(ns: argparse.Namespace) -> Command:
    return Command("revoke", grant_id=ns.grant_id, reason=ns.reason)


def _extend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grant_id", type=_grant_id)
    parser.add_argument("duration", type=_duration)
    parser.add_argument("--reason")


def _extend_build(ns: argparse.Namespace) -> Command:
    params = ExtendParams(grant_id=ns.grant_id, seconds=ns.duration)
    return Command("extend", params=params, grant_id=ns.grant_id, reason=ns.reason)


_REQ = "[--env ENV] [--reason TEXT] [--break-glass REASON]"

SUBCOMMANDS: dict[str, Subcommand] = {
    "restart": Subcommand(
        f"/ops restart <workload> -n <namespace> {_REQ}",
        "rolling restart of a Deployment, StatefulSet or DaemonSet (name or kind/name)",
        _restart_args,
        _restart_build,
    ),
    "scale": Subcommand(
        f"/ops scale <workload> <replicas> -n <namespace> {_REQ}",
        "set the replicas of a Deployment or StatefulSet",
        _scale_args,
        _scale_build,
    ),
    "rollback": Subcommand(
        f"/ops rollback <deployment> [--to-revision N] -n <namespace> {_REQ}",
        "roll a Deployment back to its previous (or the given) revision, as "
        "`kubectl rollout undo` does",
        _rollback_args,
        _rollback_build,
    ),
    "history": Subcommand(
        "/ops history <deployment> -n <namespace> [--env ENV]",
        "a Deployment's revisions, as `kubectl rollout history` lists them (no approval)",
        _history_args,
        _history_build,
    ),
    "access": Subcommand(
        f"/ops access <namespace> [--role ROLE] [--for DURATION] {_REQ}",
        "time-bound access to a namespace for your own identity (e.g. --for 1h)",
        _access_args,
        _access_build,
    ),
    "rotate": Subcommand(
        f"/ops rotate <secret-path> [--key K] [--restart w1,w2 -n <namespace>] {_REQ}",
        "write a new value to a Vault secret (KV v2) or rotate a database static role, "
        "then restart its consumers",
        _rotate_args,
        _rotate_build,
    ),
    "restore": Subcommand(
        f"/ops restore <secret-path> --to-version N {_REQ}",
        "write version N of a KV v2 secret as a new version (history is kept)",
        _restore_args,
        _restore_build,
    ),
    "status": Subcommand(
        "/ops status [REQUEST_ID | --page N]",
        "where a request stands (without an ID: your latest requests, a page at a time)",
        _status_args,
        _status_build,
    ),
    "grants": Subcommand(
        "/ops grants [--page N]",
        "active access grants: yours, or every one if you approve grants, a page at a time",
        _page_option,
        _grants_build,
    ),
    "revoke": Subcommand(
        "/ops revoke <GRANT_ID> [--reason TEXT]",
        "end a grant now (its grantee or an approver; no approval needed)",
        _revoke_args,
        _revoke_build,
    ),
    "extend": Subcommand(
        "/ops extend <GRANT_ID> <DURATION> [--reason TEXT]",
        "ask for more time on a grant (within the rule's max_duration)",
        _extend_args,
        _extend_build,
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
    """Parse the text after ``/ops`` as Slack delivers it (``&``, ``<`` and ``>`` escaped as
    ``&amp;``, ``&lt;`` and ``&gt;``: the command holds what the person typed). Raises
    :class:`CommandError` with the usage line."""
    words = _split(unescape(text))
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
