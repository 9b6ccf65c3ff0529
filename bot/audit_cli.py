"""``opsgate audit verify`` and ``opsgate audit export``: prove and ship the audit trail.

``verify [--since SEQ] [--anchor SEQ:HASH]`` recomputes the hash chain (approvals.audit_chain)
and exits 1 naming the first event changed, deleted or inserted out of order, 0 when it holds.
``export [--since SEQ|TIME] [--cursor FILE] [--format jsonl|cloudevents] [--output FILE]`` writes
the events in chain order, one per line; with ``--cursor`` it starts after the position stored in
FILE and stores the last position written there afterwards (atomically), so a cron job ships
increments. ``--since`` takes a chain position (``seq``, the first to write) or an ISO 8601 time.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from approvals.audit_chain import Verified, verify
from approvals.audit_export import events, render
from approvals.db import make_engine


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit verify`` and ``audit export`` to the ``opsgate`` command's subparsers."""
    audit = sub.add_parser("audit", help="verify or export the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    check = audit_sub.add_parser("verify", help="recompute the audit trail's hash chain")
    check.add_argument("--since", type=int, help="the chain position (seq) to start from")
    check.add_argument(
        "--anchor", help="SEQ:HASH of an event recorded elsewhere (e.g. the audit channel)"
    )
    export = audit_sub.add_parser("export", help="write the audit events as JSON lines")
    export.add_argument("--since", help="first chain position (seq), or an ISO 8601 time")
    export.add_argument("--cursor", help="file holding the last position exported; updated")
    export.add_argument("--format", choices=("jsonl", "cloudevents"), default="jsonl")
    export.add_argument("--output", help="write to this file instead of standard output")


def run(args: argparse.Namespace, database_url: str) -> int:
    """Run ``opsgate audit …``; returns the exit code (0 ok, 1 chain broken or error, 2 usage)."""
    engine = make_engine(database_url, pooled=False)
    try:
        if args.audit_command == "verify":
            return _verify(engine, args)
        return _export(engine, args)
    except OperationalError as exc:
        print(f"opsgate: cannot reach the database: {exc.orig}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _verify(engine: Engine, args: argparse.Namespace) -> int:
    anchor: tuple[int, str] | None = None
    if args.anchor is not None:
        seq, _, digest = str(args.anchor).partition(":")
        if not seq.isdigit() or len(digest) != 64:
            print("opsgate: --anchor takes SEQ:HASH (a 64-hex SHA-256)", file=sys.stderr)
            return 2
        anchor = (int(seq), digest.lower())
    with engine.connect() as conn:
        result = verify(conn, since=args.since, anchor=anchor)
    if isinstance(result, Verified):
        print(f"audit chain OK: {result.events} events, head seq {result.seq} sha256 {result.hash}")
        return 0
    print(f"audit chain BROKEN ({result.kind}): {result.message}", file=sys.stderr)
    return 1


def _export(engine: Engine, args: argparse.Namespace) -> int:
    after_seq, since_time = 0, None
    if args.since is not None:
        if str(args.since).isdigit():
            after_seq = int(args.since) - 1
        else:
            try:
                since_time = datetime.fromisoformat(args.since)
            except ValueError:
                print("opsgate: --since takes a seq or an ISO 8601 time", file=sys.stderr)
                return 2
            if since_time.tzinfo is None:
                since_time = since_time.replace(tzinfo=UTC)
    cursor = Path(args.cursor) if args.cursor else None
    if cursor is not None and cursor.exists():
        stored = cursor.read_text().strip()
        if not stored.isdigit():
            print(f"opsgate: the cursor file {cursor} does not hold a position", file=sys.stderr)
            return 2
        after_seq = max(after_seq, int(stored))
    last = after_seq
    with engine.connect() as conn:
        out: IO[bytes] = open(args.output, "ab") if args.output else sys.stdout.buffer  # noqa: SIM115
        try:
            for event in events(conn, after_seq=after_seq, since_time=since_time):
                out.write(render(event, args.format) + b"\n")
                last = event["seq"]
            out.flush()
        finally:
            if args.output:
                out.close()
    if cursor is not None and last != after_seq:
        partial = cursor.with_name(cursor.name + ".tmp")
        partial.write_text(f"{last}\n")
        os.replace(partial, cursor)
    return 0
