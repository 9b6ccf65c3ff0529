"""How long publishing an approver's App Home takes with 5,000 pending requests.

    .venv/bin/python bench/app_home.py [--pending 5000] [--rounds 20]
                                       [--postgres URL-OF-A-DATABASE-IT-MAY-WIPE]

Seeds ``--pending`` pending restart requests that ``U0SRE1`` may approve (plus a few of its
own), then times ``bot.listeners.events.publish_home`` end to end: the gate's reads (each list
a page read with its count: a fixed number of statements), the Block Kit view built and checked
by ``slack_sdk.models``, and ``views.publish`` to the fake Slack Web API of
``tests/fakes/slack.py`` over HTTP on loopback. Prints the statements per publish and the
p50 / p90 / max publish time over ``--rounds`` (after one warm-up), on SQLite in a temporary
directory and, with ``--postgres``, on PostgreSQL. Issue 13's target: under 200 ms.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from sqlalchemy import Engine, event, insert, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actions.backends.kubernetes import KubernetesBackend
from actions.rollout import RolloutReader
from approvals.db import make_engine, make_sessionmaker, migrate
from approvals.gate import Gate
from approvals.models import Request
from approvals.policy import parse_policy
from bench.revocation_lag import machine, reset_postgres
from bot.listeners.events import publish_home
from tests.fakes import slack
from tests.helpers.access import POLICY
from tests.helpers.gate import RecordingNotifier

APPROVER = "U0SRE1"


def seed(engine: Engine, count: int, now: datetime) -> None:
    """``count`` pending restarts ``APPROVER`` may approve, and 5 of its own."""
    rows: list[dict[str, Any]] = []
    for i in range(1, count + 6):
        own = i > count
        rows.append(
            {
                "id": i,
                "action": "restart",
                "params": {"name": f"api-{i}", "namespace": "payments"},
                "status": "pending",
                "requester_id": APPROVER if own else f"U{i:07d}",
                "requester_kind": "human",
                "environment": "prod",
                "namespace": "payments",
                "target": f"deployment/api-{i}",
                "reason": "bench",
                "policy_sha256": "0" * 64,
                "min_approvals": 1,
                "approvers": {"groups": ["sre"], "users": [APPROVER, "U0SRE2"], "steps": []},
                "preview": {"lines": [f"restart deployment/api-{i}"]},
                "incident": False,
                "break_glass": False,
                "expires_at": now + timedelta(hours=2),
                "escalate_at": now + timedelta(minutes=30),
                "created_at": now,
                "updated_at": now,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(Request), rows)


def run(url: str, pending: int, rounds: int, fake: slack.FakeSlack) -> tuple[int, list[float]]:
    migrate(url)
    engine = make_engine(url)
    now = datetime.now(UTC)
    seed(engine, pending, now)
    loaded = parse_policy(POLICY)
    gate = Gate(
        sessions=make_sessionmaker(engine),
        policy=lambda: loaded,
        actions={},
        notifier=RecordingNotifier(),
        clock=lambda: now,
        rollouts=RolloutReader(KubernetesBackend(kubeconfig=None)),
    )
    client = WebClient(token=slack.BOT_TOKEN, base_url=fake.api_url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    publish_home(gate, client, APPROVER)  # warm-up
    count = len(statements)
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        publish_home(gate, client, APPROVER)
        times.append(time.perf_counter() - began)
    engine.dispose()
    return count, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("OPSGATE_BENCH_POSTGRES_URL"),
        help="a PostgreSQL URL the script may wipe (or OPSGATE_BENCH_POSTGRES_URL)",
    )
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    print(f"machine: {machine()}")
    fake = slack.start_fake_slack()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            targets = [("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}")]
            if args.postgres:
                assert make_url(args.postgres).get_backend_name() == "postgresql"
                reset_postgres(args.postgres)
                targets.append(("PostgreSQL", args.postgres))
            for name, url in targets:
                count, times = run(url, args.pending, args.rounds, fake)
                ms = sorted(t * 1000 for t in times)
                p90 = ms[int(len(ms) * 0.9) - 1] if len(ms) >= 10 else ms[-1]
                print(
                    f"{name}: App Home of an approver with {args.pending:,} pending requests: "
                    f"{count} statements per publish; publish p50 {statistics.median(ms):.0f} ms, "
                    f"p90 {p90:.0f} ms, max {ms[-1]:.0f} ms over {args.rounds} rounds"
                )
                with make_engine(url).begin() as conn:
                    conn.execute(text("DELETE FROM requests"))
    finally:
        fake.server.clear()
        fake.server.stop()


if __name__ == "__main__":
    main()
