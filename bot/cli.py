"""The ``opsgate`` command: ``serve``, ``migrate`` and ``policy check``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from approvals.db import migrate
from approvals.policy import PolicyError, load_policy
from bot.settings import Settings

log = logging.getLogger("opsgate")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opsgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve Slack on POST /slack/events")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="TCP port to listen on")
    sub.add_parser("migrate", help="apply the database migrations up to head")
    policy = sub.add_parser("policy", help="work with the policy file")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate a policy file")
    check.add_argument("file", nargs="?", help="the policy file (default: OPSGATE_POLICY)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 success, 1 failure, 2 usage)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"opsgate: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        migrate(settings.database_url)
        print(f"opsgate: database at head ({_redacted(settings.database_url)})")
        return 0
    if args.command == "policy":
        path = args.file or settings.policy_path
        try:
            loaded = load_policy(path)
        except PolicyError as exc:
            print(f"opsgate: the policy is invalid:\n{exc}", file=sys.stderr)
            return 1
        print(f"{path}: OK ({len(loaded.policy.rules)} rules, sha256 {loaded.sha256})")
        return 0
    return _serve(settings, args.host, args.port)


def _serve(settings: Settings, host: str, port: int) -> int:
    from bot.app import create_app

    try:
        app = create_app(settings)
    except PolicyError as exc:
        print(f"opsgate: refusing to start, the policy is invalid:\n{exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"opsgate: refusing to start: {exc}", file=sys.stderr)
        return 1
    uvicorn.run(app, host=host, port=port, log_level="info")
    return 0


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    raise SystemExit(main())
