"""Revocation lag and start-up times, on SQLite and PostgreSQL.

    .venv/bin/python bench/revocation_lag.py [--grants 1000] [--active 10000] [--postgres URL]
                                             [--no-sqlite]

For each database:

1. *Lag*: ``--grants`` active grants that all expire in the same second, a few seconds ahead,
   each with its RoleBinding in a fake Kubernetes API server (real HTTP, ``tests/fakes/kube.py``)
   and announced to the ExpiryScheduler (``grant_scheduled``), as ``GrantService.activate``
   does. The ExpiryScheduler runs in real time; when every grant is revoked, the lag of each
   (``revoked_at``, the moment the backends confirmed the removal, minus ``expires_at``, both
   from the database) is reported as p50 / p99 / max, with how long after the expiry the last end
   was committed.
2. *Sweep at start*: ``--grants`` grants already an hour overdue (the bot was down), then
   ``ExpiryScheduler.start()`` is timed: it sweeps them all, and runs the drift check, before it
   returns.
3. *Start with active grants*: ``--active`` grants ending in two hours, each with its
   RoleBinding; ``ExpiryScheduler.start()`` is timed: its sweep finds nothing due and its drift
   check, nothing to remove.

The notifier does nothing (Slack's latency is not opsgate's revocation lag). The PostgreSQL URL
must name a database the script may wipe: its ``public`` schema is dropped and recreated.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, insert, select, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actions.access import Access, role_binding_body
from actions.backends.kubernetes import KubernetesBackend
from approvals.db import make_engine, make_sessionmaker, migrate
from approvals.expiry import ExpiryScheduler
from approvals.grants import GrantService
from approvals.models import Grant, Request
from approvals.notifier import GrantView
from tests.fakes.kube import FakeKubernetes, write_kubeconfig


class QuietNotifier:
    def grant_changed(self, grant: GrantView, *, event: str) -> None:
        return None


def now() -> datetime:
    return datetime.now(UTC)


def reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def seed(engine: Engine, kube: FakeKubernetes, count: int, expires_at: datetime) -> list[int]:
    """``count`` active access requests and grants expiring at ``expires_at``, with bindings."""
    started = expires_at - timedelta(hours=1)
    with engine.begin() as conn:
        first = conn.execute(select(text("coalesce(max(id), 0)")).select_from(Request)).scalar()
        ids = list(range(int(first or 0) + 1, int(first or 0) + 1 + count))
        conn.execute(
            insert(Request),
            [
                {
                    "id": i,
                    "action": "access",
                    "params": {"namespace": "payments"},
                    "status": "active",
                    "requester_id": f"U{i:06d}",
                    "requester_kind": "human",
                    "environment": "prod",
                    "namespace": "payments",
                    "target": "view access to payments",
                    "policy_sha256": "0" * 64,
                    "min_approvals": 1,
                    "approvers": {"groups": ["sre"], "users": ["U0SRE1"]},
                    "preview": {},
                    "incident": False,
                    "break_glass": False,
                    "created_at": started,
                    "updated_at": started,
                }
                for i in ids
            ],
        )
        conn.execute(
            insert(Grant),
            [
                {
                    "id": i,
                    "grantee_id": f"U{i:06d}",
                    "kube_context": "prod",
                    "environment": "prod",
                    "namespace": "payments",
                    "role": "view",
                    "cluster_role": "view",
                    "kubernetes_user": f"user{i}@example.com",
                    "role_binding": f"opsgate-grant-{i}",
                    "duration_seconds": 3600,
                    "max_duration_seconds": 4 * 3600,
                    "started_at": started,
                    "expires_at": expires_at,
                    "reminded_at": expires_at - timedelta(minutes=10),
                    "status": "active",
                    "updated_at": started,
                }
                for i in ids
            ],
        )
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT setval('requests_id_seq', (SELECT max(id) FROM requests))"))
    kube.add_many(bindings(ids, expires_at))
    return ids


def bindings(ids: list[int], expires_at: datetime) -> Iterator[dict[str, Any]]:
    for i in ids:
        yield role_binding_body(
            grant_id=i,
            namespace="payments",
            cluster_role="view",
            kubernetes_user=f"user{i}@example.com",
            expires_at=expires_at,
        )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def build(
    url: str, kube: FakeKubernetes, workdir: Path, clock: Callable[[], datetime]
) -> tuple[Engine, GrantService, KubernetesBackend]:
    migrate(url)
    engine = make_engine(url)
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", {"prod": kube})
    backend = KubernetesBackend(kubeconfig=str(kubeconfig), request_timeout=10)
    grants = GrantService(
        sessions=make_sessionmaker(engine),
        access=Access(kube=backend, vault=None, clock=clock),
        notifier=QuietNotifier(),
        clock=clock,
        kube_contexts=lambda: ["prod"],
    )
    return engine, grants, backend


def lag_run(url: str, count: int, workdir: Path) -> dict[str, float]:
    with FakeKubernetes() as kube:
        engine, grants, backend = build(url, kube, workdir, now)
        scheduler = ExpiryScheduler(engine, grants=grants, clock=now, instance="bench")
        scheduler.start()
        expires_at = now().replace(microsecond=0) + timedelta(seconds=max(15, count // 25))
        ids = seed(engine, kube, count, expires_at)
        for view in (grants.get(i) for i in ids):
            scheduler.grant_scheduled(view)
        setup_done = now()
        if setup_done >= expires_at:
            raise SystemExit("setup took longer than the lead time; raise it")
        time.sleep(max((expires_at - now()).total_seconds(), 0))
        cpu = time.process_time()  # from the expiry on: opsgate's and the fake API server's
        deadline = time.monotonic() + 600
        with make_sessionmaker(engine)() as session:
            while True:
                left = session.scalar(
                    select(text("count(*)")).select_from(Grant).where(Grant.status != "revoked")
                )
                session.rollback()
                if not left:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{left} grants still not revoked after 10 minutes")
                time.sleep(0.05)
            # when the last end was committed (to the 0.05 s of this loop): revoked_at is when
            # the backends confirmed a removal, which a batch records in one transaction later
            recorded = (now() - expires_at).total_seconds()
            cpu = time.process_time() - cpu
            rows = session.execute(select(Grant.revoked_at, Grant.expires_at)).all()
        scheduler.shutdown()
        backend.close()
        engine.dispose()
    lags = [(revoked - expires).total_seconds() for revoked, expires in rows]
    return {
        "p50": statistics.median(lags),
        "p99": percentile(lags, 0.99),
        "max": max(lags),
        "min": min(lags),
        "recorded": recorded,
        "cpu": cpu,
    }


def start_sweep_run(url: str, count: int, workdir: Path) -> float:
    with FakeKubernetes() as kube:
        engine, grants, backend = build(url, kube, workdir, now)
        seed(engine, kube, count, now() - timedelta(hours=1))
        scheduler = ExpiryScheduler(engine, grants=grants, clock=now, instance="bench-start")
        began = time.perf_counter()
        scheduler.start()
        elapsed = time.perf_counter() - began
        with make_sessionmaker(engine)() as session:
            left = session.scalar(
                select(text("count(*)")).select_from(Grant).where(Grant.status != "revoked")
            )
        assert left == 0, f"{left} grants left after start"
        assert not kube.objects("RoleBinding"), "RoleBindings left after start"
        scheduler.shutdown()
        backend.close()
        engine.dispose()
    return elapsed


def start_run(url: str, count: int, workdir: Path) -> float:
    with FakeKubernetes() as kube:
        engine, grants, backend = build(url, kube, workdir, now)
        seed(engine, kube, count, now() + timedelta(hours=2))
        scheduler = ExpiryScheduler(engine, grants=grants, clock=now, instance="bench-active")
        began = time.perf_counter()
        scheduler.start()
        elapsed = time.perf_counter() - began
        assert len(kube.objects("RoleBinding")) == count, "the drift check removed bindings"
        scheduler.shutdown()
        backend.close()
        engine.dispose()
    return elapsed


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sqlite3

    return (
        f"{cpu}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=1000)
    parser.add_argument("--active", type=int, default=10_000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("OPSGATE_BENCH_POSTGRES_URL"),
        help="a PostgreSQL URL the script may wipe (or OPSGATE_BENCH_POSTGRES_URL)",
    )
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"grants: {args.grants}, fake Kubernetes API over HTTP on loopback, no Vault")
    targets: list[tuple[str, Callable[[Path], str]]] = []
    if not args.no_sqlite:
        targets.append(("SQLite", lambda d: f"sqlite:///{d / 'bench.db'}"))
    if args.postgres:
        assert make_url(args.postgres).get_backend_name() == "postgresql"
        targets.append(("PostgreSQL", lambda d: args.postgres))
    for name, url_for in targets:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            url = url_for(workdir)
            if name == "PostgreSQL":
                reset_postgres(url)
                with create_engine(url).connect() as conn:
                    version = conn.execute(text("SHOW server_version")).scalar()
                name = f"PostgreSQL {version}"
            lag = lag_run(url, args.grants, workdir)
            print(
                f"{name}: revocation lag, {args.grants} grants expiring in the same second: "
                f"p50 {lag['p50']:.2f} s, p99 {lag['p99']:.2f} s, max {lag['max']:.2f} s "
                f"(min {lag['min']:.2f} s); every end recorded {lag['recorded']:.2f} s after "
                f"the expiry, with {lag['cpu']:.2f} s of CPU (this process: opsgate and the fake "
                "API server)"
            )
            if name.startswith("PostgreSQL"):
                reset_postgres(url)
            else:
                (workdir / "bench.db").unlink()
            elapsed = start_sweep_run(url, args.grants, workdir)
            print(f"{name}: start-up sweep of {args.grants} overdue grants: {elapsed:.2f} s")
            if name.startswith("PostgreSQL"):
                reset_postgres(url)
            else:
                (workdir / "bench.db").unlink()
            if args.active:
                elapsed = start_run(url, args.active, workdir)
                print(f"{name}: start with {args.active} active grants: {elapsed:.2f} s")


if __name__ == "__main__":
    main()
