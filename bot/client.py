"""The ``opsgate request``, ``status`` and ``explain`` commands: a client of the HTTP API.

They talk to ``$OPSGATE_URL`` (e.g. ``https://opsgate.example.com``) with ``$OPSGATE_TOKEN`` as
a bearer token, and exit with a code a script can branch on (:data:`EXIT_CODES`). The options of
``opsgate request KIND`` are the request body's fields (:mod:`bot.api.models`), under the
``/ops`` flags (``-n``, ``--to-revision``, ``--for``…).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

from bot.api.models import REQUEST_MODELS

EXIT_CODES = {
    "succeeded": 0,
    "active": 0,
    "approved": 0,
    "failed": 1,
    "unknown": 1,
    "denied": 3,
    "cancelled": 3,
    "revoked": 3,
    "expired": 4,
}
"""Exit code per final status; 5: still pending (or executing) when the wait ended; 2: usage
or configuration; 3 also for a request the policy refuses; 6: the API refused the call (401,
404, 409, 422…); 7: the API cannot be reached."""

PENDING_EXIT = 5
REFUSED_EXIT = 6
UNREACHABLE_EXIT = 7
FINAL = frozenset({"succeeded", "active", "failed", "unknown", "denied", "cancelled", "expired"})

_FLAGS = {"namespace": ("-n", "--namespace"), "duration": ("--for",)}
_INTS = {"replicas", "to_revision", "to_version"}


def add_commands(sub: Any) -> None:
    """Add ``request``, ``status`` and ``explain`` to the ``opsgate`` subcommands ``sub``."""
    for command, what in (("request", "file a request"), ("explain", "dry-run a request")):
        parser = sub.add_parser(command, help=f"{what} through the HTTP API (OPSGATE_URL)")
        kinds = parser.add_subparsers(dest="kind", required=True)
        for kind, model in REQUEST_MODELS.items():
            kind_parser = kinds.add_parser(kind, help=(model.__doc__ or "").split("\n")[0])
            _kind_arguments(kind_parser, model.POSITIONAL, model.OPTIONS)
            if command == "request":
                _wait_arguments(kind_parser)
                kind_parser.add_argument("--idempotency-key", help="retry safely with this key")
    status = sub.add_parser("status", help="show a request (HTTP API)")
    status.add_argument("request_id", type=int)
    _wait_arguments(status)


def _kind_arguments(
    parser: argparse.ArgumentParser, positional: tuple[str, ...], options: dict[str, str]
) -> None:
    for field in positional:
        parser.add_argument(field, type=int if field in _INTS else str)
    for field, flag in options.items():
        flags = _FLAGS.get(field, (flag,))
        parser.add_argument(*flags, dest=field, type=int if field in _INTS else str)
    parser.add_argument("--env")
    parser.add_argument("--reason")
    parser.add_argument("--break-glass", dest="break_glass", metavar="REASON")


def _wait_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="wait until the request ends")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds --wait waits at most (3600)"
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def body_of(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON body of ``opsgate request|explain KIND …``."""
    model = REQUEST_MODELS[args.kind]
    fields = [*model.POSITIONAL, *model.OPTIONS, "env", "reason", "break_glass"]
    body: dict[str, Any] = {"action": args.kind}
    for field in fields:
        value = getattr(args, field, None)
        if value is not None:
            body[field] = value.split(",") if field == "restart" else value
    return body


def run(args: argparse.Namespace) -> int:
    """Run ``request``, ``status`` or ``explain``; returns the exit code."""
    url = os.environ.get("OPSGATE_URL", "").rstrip("/")
    token = os.environ.get("OPSGATE_TOKEN", "")
    if not url or not token:
        print("opsgate: set OPSGATE_URL and OPSGATE_TOKEN", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=f"{url}/api/v1", headers=headers, timeout=150.0) as http:
            return _run(http, args)
    except httpx.HTTPError as exc:
        print(f"opsgate: cannot reach {url}: {exc}", file=sys.stderr)
        return UNREACHABLE_EXIT


def _run(http: httpx.Client, args: argparse.Namespace) -> int:
    if args.command == "explain":
        response = http.post("/explain", json=body_of(args))
        if response.status_code != 200:
            return _refused(response)
        explained = response.json()
        print(f"decision: {explained['outcome']} ({explained['reason']}): {explained['message']}")
        print(f"rule:     {explained['rule'] or 'none'}")
        for line in explained["preview"]:
            print(f"  {line}")
        if explained["preview_error"]:
            print(f"preview failed: {explained['preview_error']}")
        return 3 if explained["outcome"] == "deny" else 0
    if args.command == "request":
        extra = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
        response = http.post("/requests", json=body_of(args), headers=extra)
        if response.status_code not in (200, 201):
            return _refused(response)
        request = response.json()
        if not args.json:
            _show(request)
    else:
        response = http.get(f"/requests/{args.request_id}")
        if response.status_code != 200:
            return _refused(response)
        request = response.json()
    if args.wait:
        request = _wait(http, request, args.timeout, quiet=args.json)
        if request is None:
            return REFUSED_EXIT
    if args.json:
        print(json.dumps(request, indent=2))
    elif args.command == "status" or args.wait:
        _show(request)
    if args.wait or args.command == "status":
        status = str(request["status"])
        return EXIT_CODES.get(status, PENDING_EXIT) if status in FINAL else PENDING_EXIT
    return 0


def _wait(
    http: httpx.Client, request: dict[str, Any], timeout: float, *, quiet: bool
) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while request["status"] not in FINAL and time.monotonic() < deadline:
        wait = max(1, min(60, int(deadline - time.monotonic())))
        response = http.get(f"/requests/{request['id']}", params={"wait": wait})
        if response.status_code != 200:
            _refused(response)
            return None
        if response.json()["status"] != request["status"] and not quiet:
            print(f"request #{request['id']}: {response.json()['status']}", file=sys.stderr)
        request = response.json()
    return request


def _show(request: dict[str, Any]) -> None:
    approval = request["approval"]
    who = request["requester"]["agent"] or request["requester"]["id"]
    print(f"request #{request['id']}: {request['action']} {request['target']}: {request['status']}")
    print(f"  asked by {who}; rule {request['rule'] or '-'}")
    if approval["needed"] and request["status"] == "pending":
        print(
            f"  waiting for {approval['min_approvals']} approval(s) from "
            f"{', '.join(approval['approver_groups'])} in Slack"
        )
    for line in request["preview"]:
        print(f"  {line}")
    if request["result"]:
        print(f"  result: {request['result']}")
    if request["error"]:
        print(f"  error: {request['error']}")


def _refused(response: httpx.Response) -> int:
    try:
        problem = response.json()
        detail = problem.get("detail") or problem.get("title")
    except ValueError:
        detail = response.text[:300]
    print(f"opsgate: {response.status_code}: {detail}", file=sys.stderr)
    return 3 if response.status_code == 403 else REFUSED_EXIT
