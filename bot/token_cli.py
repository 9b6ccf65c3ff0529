"""``opsgate token create|list|revoke``: the HTTP API's bearer tokens (:mod:`approvals.tokens`).

``create`` prints the new token alone on stdout (so ``TOKEN=$(opsgate token create …)`` works)
and what it is for on stderr; only the token's SHA-256 is stored.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from approvals.db import make_engine, make_sessionmaker, migrate
from approvals.models import ActorKind
from approvals.policy import PolicyError, load_policy, parse_duration
from approvals.tokens import TokenError, TokenStore
from bot.settings import Settings


def add_commands(sub: Any) -> None:
    """Add ``token`` to the ``opsgate`` subcommands ``sub``."""
    token = sub.add_parser("token", help="manage the HTTP API's bearer tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token; prints it alone on stdout")
    who = create.add_mutually_exclusive_group(required=True)
    who.add_argument("--agent", help="an agent of the policy's agents (its name or ID)")
    who.add_argument("--user", help="a person's Slack user ID (U…): the token acts as them")
    create.add_argument("--expires", help="lifetime, e.g. 30d, 12h (default: never)")
    token_sub.add_parser("list", help="list the tokens (never their value)")
    revoke = token_sub.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("token_id", type=int, help="the token's ID (opsgate token list)")


def _now() -> datetime:
    return datetime.now(UTC)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``opsgate token …``; returns the exit code (0, 1 failure, 2 usage)."""
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        store = TokenStore(make_sessionmaker(engine), _now)
        if args.token_command == "create":
            return _create(settings, store, args)
        if args.token_command == "revoke":
            try:
                info = store.revoke(args.token_id)
            except TokenError as exc:
                print(f"opsgate: {exc}", file=sys.stderr)
                return 1
            print(f"token #{info.id} ({info.name}) revoked at {info.revoked_at:%Y-%m-%d %H:%M} UTC")
            return 0
        now = _now()
        print(f"{'ID':>4}  {'PREFIX':<10}  {'KIND':<5}  {'SUBJECT':<16}  {'STATE':<7}  LAST USED")
        for info in store.list():
            used = f"{info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at else "never"
            print(
                f"{info.id:>4}  {info.prefix:<10}  {info.subject_kind:<5}  "
                f"{info.name:<16}  {info.state(now):<7}  {used}"
            )
        return 0
    finally:
        engine.dispose()


def _create(settings: Settings, store: TokenStore, args: argparse.Namespace) -> int:
    try:
        expires = parse_duration(args.expires) if args.expires else None
    except ValueError as exc:
        print(f"opsgate: --expires: {exc}", file=sys.stderr)
        return 2
    if args.agent is not None:
        try:
            agents = load_policy(settings.policy_path).policy.agents
        except PolicyError as exc:
            print(f"opsgate: the policy is invalid:\n{exc}", file=sys.stderr)
            return 1
        found = [(i, a) for i, a in agents.items() if args.agent in (i, a.name)]
        if not found:
            names = ", ".join(f"{a.name} ({i})" for i, a in agents.items()) or "none"
            print(
                f"opsgate: '{args.agent}' is not in the policy's agents (agents: {names})",
                file=sys.stderr,
            )
            return 1
        subject, name, kind = found[0][0], found[0][1].name, ActorKind.AGENT
    else:
        subject, name, kind = args.user, args.user, ActorKind.HUMAN
    token, info = store.create(subject_id=subject, subject_kind=kind, name=name, expires_in=expires)
    until = f"until {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else "no expiry"
    print(f"token #{info.id} for {kind} {name} ({subject}), {until}", file=sys.stderr)
    print(token)
    return 0
