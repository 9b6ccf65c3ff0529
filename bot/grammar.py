"""The ``/ops`` command grammar (README.md, 'Commands'), with ``shlex`` and ``argparse``.

:func:`parse` turns the text after ``/ops`` into a :class:`Command` or raises
:class:`CommandError`, whose message says what was wrong and ends with the usage line. Each request
kind's entry in :data:`SUBCOMMANDS` is derived from its declaration (``actions.spec.KindSpec``:
its typed arguments, usage line and summary) in ``actions.registry.KINDS``; the commands that are
not request kinds (history, status, grants, revoke, extend) are declared here, but a kind's
listing (``/ops runbooks``, its ``catalogue``).
"""

from __future__ import annotations

import argparse
import difflib
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from actions.durations import parse_duration
from actions.registry import KINDS
from actions.spec import MAX_ID, Arg, ArgType, KindSpec
from actions.workloads import WorkloadKind, parse_workload
from approvals.extend import ExtendParams
from approvals.paging import MAX_PAGE
from bot.mrkdwn import escape, unescape

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
    """argparse that raises instead of printing and exiting, and takes no abbreviation of an
    option (``--b`` is not ``--break-glass``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CommandError(message)


@dataclass(frozen=True)
class Command:
    """A parsed ``/ops`` command.

    ``params`` is set for request kinds (the kind's pydantic params model); ``namespace``, ``env``,
    ``path``, ``reason`` and ``break_glass`` (the break-glass justification) are what the policy
    matches on. ``request_id`` is for status (None: the requester's latest requests);
    ``grant_id`` for revoke and extend; ``page`` (1-based) is the page of a list answer
    (``status`` without an ID, ``grants``, ``changes``); ``since`` (seconds) is how far back
    ``changes`` looks; ``topic`` the command ``help`` was asked about; ``name`` is the command
    word, ``catalogue`` for a kind's listing (``/ops runbooks``), whose kind is ``kind``.
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
    since: int | None = None
    kind: str | None = None
    topic: str | None = None


@dataclass(frozen=True)
class Subcommand:
    """One ``/ops`` word: its usage line, its line in ``/ops help``, how its arguments are
    declared and read, and a whole example command (``/ops help <word>`` shows it)."""

    usage: str
    summary: str
    configure: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], Command]
    example: str = ""


def _request_options(parser: argparse.ArgumentParser) -> None:
    """The options every request takes: ``--env``, ``--reason``, ``--break-glass``."""
    parser.add_argument("--env")
    parser.add_argument("--reason")
    parser.add_argument("--break-glass", dest="break_glass", metavar="REASON")


def _request(name: str, params: BaseModel, ns: argparse.Namespace, **extra: Any) -> Command:
    """A request command; a break-glass justification is also the reason when none is given."""
    reason = ns.reason if ns.reason is not None else ns.break_glass
    return Command(
        name,
        params=params,
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


__all__ = [
    "MAX_ID",
    "Command",
    "CommandError",
    "help_text",
    "kind_subcommand",
    "parse",
    "parse_id",
    "usage",
]


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


def _deployment_name(text: str) -> str:
    kind, name = parse_workload(text)
    if kind not in (None, WorkloadKind.DEPLOYMENT):
        raise ValueError(f"only Deployments have a rollout history ('{text}' is a {kind})")
    return name


def _history_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("deployment")
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--env")


def _history_build(ns: argparse.Namespace) -> Command:
    return Command(
        "history", namespace=ns.namespace, env=ns.env, workload=_deployment_name(ns.deployment)
    )


def _argument(arg: Arg) -> Callable[[str], Any]:
    """``arg``'s conversion as an argparse type (its ValueError as argparse's type error)."""

    def convert(text: str) -> Any:
        try:
            return arg.convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def kind_subcommand(spec: KindSpec) -> Subcommand:
    """The subcommand of a request kind, from its declared arguments (its ``Command`` is named
    by the kind's ``name``, what the policy's rules match)."""

    def configure(parser: argparse.ArgumentParser) -> None:
        for arg in spec.grammar:
            if arg.positional:
                many = "*" if arg.type is ArgType.PARAMETERS else None
                parser.add_argument(arg.name, type=_argument(arg), nargs=many, help=arg.help)
            else:
                parser.add_argument(
                    *arg.flags,
                    dest=arg.name,
                    type=_argument(arg),
                    required=arg.required,
                    metavar=arg.metavar,
                    help=arg.help,
                )
        _request_options(parser)

    def build(ns: argparse.Namespace) -> Command:
        values = {arg.name: getattr(ns, arg.name) for arg in spec.grammar}
        params = spec.params(values)
        namespace, path = spec.scope_of(params)
        return _request(spec.name, params, ns, namespace=namespace, path=path)

    return Subcommand(spec.usage(_REQ), spec.summary, configure, build, spec.example)


def catalogue_subcommand(spec: KindSpec) -> Subcommand:
    """The listing command of a kind that declares one (``KindSpec.catalogue``: ``/ops
    runbooks``), answered without a request: ``Command("catalogue", kind=spec.name)``."""
    assert spec.catalogue is not None
    return Subcommand(
        f"/ops {spec.catalogue.word}",
        spec.catalogue.summary,
        lambda parser: None,
        lambda ns: Command("catalogue", kind=spec.name),
        f"/ops {spec.catalogue.word}",
    )


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


CHANGES_SINCE = 2 * 3600
"""How far back ``/ops changes`` looks when ``--since`` is not given: seconds."""
CHANGES_SINCE_MAX = 90 * 86400
"""The furthest back ``/ops changes --since`` looks: seconds."""


def _changes_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?")
    parser.add_argument("-n", "--namespace")
    parser.add_argument("--since", type=_duration, default=CHANGES_SINCE, metavar="DURATION")
    _page_option(parser)


def _changes_build(ns: argparse.Namespace) -> Command:
    if not 0 < ns.since <= CHANGES_SINCE_MAX:
        raise ValueError("--since looks back at most 90d")
    return Command(
        "changes", namespace=ns.namespace, workload=ns.workload, since=ns.since, page=ns.page
    )


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
    **{spec.word: kind_subcommand(spec) for spec in KINDS},
    **{s.catalogue.word: catalogue_subcommand(s) for s in KINDS if s.catalogue is not None},
    "history": Subcommand(
        "/ops history <deployment> -n <namespace> [--env ENV]",
        "a Deployment's revisions, as `kubectl rollout history` lists them (no approval)",
        _history_args,
        _history_build,
        "/ops history payments-api -n payments",
    ),
    "status": Subcommand(
        "/ops status [REQUEST_ID | --page N]",
        "where a request stands (without an ID: your latest requests, a page at a time)",
        _status_args,
        _status_build,
        "/ops status 42",
    ),
    "changes": Subcommand(
        "/ops changes [WORKLOAD] [-n NAMESPACE] [--since DURATION] [--page N]",
        "what opsgate changed, newest first (default: the last 2h; in an incident channel, "
        "on what that channel's requests touched)",
        _changes_args,
        _changes_build,
        "/ops changes payments-api -n payments --since 6h",
    ),
    "grants": Subcommand(
        "/ops grants [--page N]",
        "active access grants: yours, or every one if you approve grants, a page at a time",
        _page_option,
        _grants_build,
        "/ops grants",
    ),
    "revoke": Subcommand(
        "/ops revoke <GRANT_ID> [--reason TEXT]",
        "end a grant now (its grantee or an approver; no approval needed)",
        _revoke_args,
        _revoke_build,
        '/ops revoke 42 --reason "done debugging"',
    ),
    "extend": Subcommand(
        "/ops extend <GRANT_ID> <DURATION> [--reason TEXT]",
        "ask for more time on a grant (within the rule's max_duration)",
        _extend_args,
        _extend_build,
        '/ops extend 42 30m --reason "the migration runs late"',
    ),
}


def usage(name: str | None = None) -> str:
    """The usage line of one subcommand, or of all of them."""
    if name in SUBCOMMANDS:
        return f"Usage: `{SUBCOMMANDS[name].usage}`"
    lines = ["/ops help"] + [sub.usage for sub in SUBCOMMANDS.values()]
    return "Usage:\n" + "\n".join(f"`{line}`" for line in lines)


def help_text(topic: str | None = None) -> str:
    """The answer to ``/ops help``; with ``topic`` (``/ops help scale``), that command's
    summary, usage line and an example, or the nearest command's name for a typo."""
    if topic is not None and topic != "help":
        sub = SUBCOMMANDS.get(topic)
        if sub is None:
            return f"There is no command `{escape(topic)}`.{_nearest(topic)}\n{usage()}"
        example = f"\nExample: `{sub.example}`" if sub.example else ""
        return f"*/ops {topic}*: {sub.summary}\nUsage: `{sub.usage}`{example}"
    lines = ["*opsgate*: Day 2 operations through an approval gate. Commands:"]
    lines += [f"• `{sub.usage}`: {sub.summary}" for sub in SUBCOMMANDS.values()]
    lines.append("• `/ops help`: this message")
    return "\n".join(lines)


def parse(text: str) -> Command:
    """Parse the text after ``/ops`` as Slack delivers it (``&``, ``<`` and ``>`` escaped as
    ``&amp;``, ``&lt;`` and ``&gt;``: the command holds what the person typed). Raises
    :class:`CommandError` with the usage line."""
    return parse_words(_split(unescape(text)))


def parse_words(words: list[str]) -> Command:
    """Parse a command already split into words (``["restart", "web", "-n", "shop"]``), as
    :func:`parse` does after splitting; the HTTP API builds its words from a JSON body. Raises
    :class:`CommandError` with the usage line."""
    if not words or words[0] == "help":
        return Command("help", topic=words[1] if len(words) > 1 else None)
    name, rest = words[0], words[1:]
    sub = SUBCOMMANDS.get(name)
    if sub is None:
        raise CommandError(f"Unknown command `{name}`.{_nearest(name)}\n{usage()}")
    parser = _Parser(prog=f"/ops {name}", add_help=False, exit_on_error=False)
    sub.configure(parser)
    try:
        namespace = parser.parse_args(_dash_values(parser, rest))
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


def _nearest(word: str) -> str:
    """`` Did you mean `restart`?`` for a command word close to ``word`` (``difflib``'s
    ratio of at least 0.6), else nothing."""
    close = difflib.get_close_matches(word, [*SUBCOMMANDS, "help"], n=1, cutoff=0.6)
    return f" Did you mean `{close[0]}`?" if close else ""


def _dash_values(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """``words`` with each value that starts with ``-`` joined to the option before it
    (``--reason -5%`` becomes ``--reason=-5%``, ``-n -x`` becomes ``-n-x``), as argparse would
    otherwise read such a value as an option: a reason may begin with a dash."""
    takes_value = {
        flag
        for action in parser._actions
        if action.option_strings and action.nargs is None and action.const is None
        for flag in action.option_strings
    }
    joined: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        value = words[i + 1] if i + 1 < len(words) else None
        if word in takes_value and value is not None and value.startswith("-"):
            joined.append(f"{word}={value}" if word.startswith("--") else f"{word}{value}")
            i += 2
            continue
        joined.append(word)
        i += 1
    return joined
