"""Work that stays flat as data grows (issue 10): the drift check, every sweep and every read
behind a list answer use a bounded number of queries, and list answers are paginated.

Query counts come from a SQLAlchemy ``before_cursor_execute`` listener on the engine. Nothing here
asserts a timing except the start scenario the issue names (10,000 active grants: ready, first
sweep and drift check done within a generous 3 s).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes.config.kube_config import KubeConfigLoader
from sqlalchemy import Engine, insert, select, text, update

from actions.access import EXPIRES_AT_ANNOTATION, rfc3339, role_binding_body
from actions.backends.kubernetes import (
    REFRESH_HOOK_INTERVAL,
    KubernetesBackend,
    _at_most_every,
)
from approvals.audit_chain import CHAIN_STATEMENTS
from approvals.db import make_engine, migrate
from approvals.gate import Gate
from approvals.models import AuditEvent, Grant, Request
from approvals.policy import parse_policy
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, write_kubeconfig
from tests.helpers.access import POLICY as ACCESS_POLICY
from tests.helpers.access import app_home_opened
from tests.helpers.bot import running_bot, wait_for
from tests.helpers.bulk import counting, seed_pending
from tests.helpers.clock import T0, Clock
from tests.helpers.gate import RecordingNotifier, built_gate
from tests.helpers.grants import GrantWorld, make_world

RB_API = "rbac.authorization.k8s.io/v1"
MANY = 10_000


def seed_grants(
    engine: Engine,
    count: int,
    *,
    expires_at: datetime,
    grantee: Callable[[int], str] = lambda i: f"U{i:06d}",
    duration: int = 3600,
) -> list[int]:
    """``count`` active access requests and their grants in ``payments`` (prod), inserted in
    bulk, as activation leaves them; returns their IDs."""
    started = expires_at - timedelta(seconds=duration)
    with engine.begin() as conn:
        first = conn.execute(text("SELECT coalesce(max(id), 0) FROM requests")).scalar_one()
        ids = list(range(first + 1, first + 1 + count))
        conn.execute(
            insert(Request),
            [
                {
                    "id": i,
                    "action": "access",
                    "params": {"namespace": "payments"},
                    "status": "active",
                    "requester_id": grantee(i),
                    "requester_kind": "human",
                    "environment": "prod",
                    "namespace": "payments",
                    "target": "view access to payments",
                    "policy_sha256": "0" * 64,
                    "min_approvals": 1,
                    "approvers": {"groups": ["sre"], "users": ["U0SRE1", "U0SRE2"]},
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
                    "grantee_id": grantee(i),
                    "kube_context": "prod",
                    "environment": "prod",
                    "namespace": "payments",
                    "role": "view",
                    "cluster_role": "view",
                    "kubernetes_user": f"user{i}@example.com",
                    "role_binding": f"opsgate-grant-{i}",
                    "duration_seconds": duration,
                    "max_duration_seconds": 4 * 3600,
                    "started_at": started,
                    "expires_at": expires_at,
                    "status": "active",
                    "updated_at": started,
                }
                for i in ids
            ],
        )
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval('requests_id_seq', (SELECT max(id) FROM requests))"))
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


# --- the drift check and the grant sweeps --------------------------------------------------------


@pytest.fixture
def gw(tmp_path: Path, database_url: str, kube: FakeKubernetes) -> Iterator[GrantWorld]:
    world = make_world(tmp_path, database_url, kube)
    yield world
    world.backend.close()
    world.engine.dispose()


def test_the_drift_check_of_10000_bindings_reads_the_database_in_a_few_queries(
    gw: GrantWorld,
) -> None:
    ends = T0 + timedelta(hours=2)
    ids = seed_grants(gw.engine, MANY, expires_at=ends)
    assert gw.kube.add_many(bindings(ids, ends)) == MANY
    # the world's two contexts (prod, staging) are the same cluster: each binding is seen twice;
    # the requests being executed and the grants active or ending are read once, in two queries
    with counting(gw.engine) as statements:
        assert gw.grants.drift_check() == []
    assert len(statements) == 2, statements
    assert len(gw.kube.objects("RoleBinding")) == MANY
    assert gw.notifier.events == []

    # drift among them: a binding nobody accounts for, the binding of a grant that has ended,
    # and one whose annotation says its grant has expired; the count stays bounded
    gw.kube.add_many(bindings([9_999_999], ends))
    with gw.engine.begin() as conn:
        conn.execute(update(Grant).where(Grant.id == ids[0]).values(status="revoked"))
    overdue = gw.kube.get_object(RB_API, "RoleBinding", "payments", f"opsgate-grant-{ids[1]}")
    assert overdue is not None
    overdue["metadata"]["annotations"][EXPIRES_AT_ANNOTATION] = rfc3339(T0 - timedelta(minutes=1))
    gw.kube.add(overdue)
    with counting(gw.engine) as statements:
        removed = gw.grants.drift_check()
    assert sorted(removed) == sorted(
        [
            "prod/payments/opsgate-grant-9999999",
            f"prod/payments/opsgate-grant-{ids[0]}",
            f"prod/payments/opsgate-grant-{ids[1]}",
        ]
    )
    # plus: one lookup of the drifted IDs, the revocation of one grant (claim, finish, announce)
    # and the audit of two deletions, whatever the number of bindings
    assert len(statements) <= 20, statements
    assert gw.row(ids[1]).status == "revoked"
    assert gw.row(ids[1]).revoke_reason.startswith("drift: RoleBinding payments/opsgate-grant-")
    with gw.sessions() as session:
        drift = session.scalars(
            select(AuditEvent.request_id).where(AuditEvent.event == "drift_removed")
        ).all()
    assert sorted(drift, key=lambda i: i or 0) == [None, ids[0]]
    assert len(gw.kube.objects("RoleBinding")) == MANY - 2


def test_reminders_and_the_sweep_use_a_bounded_number_of_queries(gw: GrantWorld) -> None:
    soon = T0 + timedelta(minutes=5)
    ids = seed_grants(gw.engine, 300, expires_at=soon)
    gw.kube.add_many(bindings(ids, soon))
    with counting(gw.engine) as statements:
        assert gw.grants.remind_due() == ids
    assert len(statements) <= 3, statements
    assert [event for _, event, _ in gw.notifier.events] == ["reminder"] * 300

    gw.clock.advance(301)
    with counting(gw.engine) as statements:
        assert sorted(gw.grants.sweep()) == ids
    batches = -(-300 // 200)
    assert len(statements) <= 8 * batches + 6, len(statements)
    assert gw.kube.objects("RoleBinding") == []
    assert gw.grants.next_expiry() is None


def test_a_burst_of_ends_deletes_the_role_bindings_a_batch_per_call(gw: GrantWorld) -> None:
    """300 grants ending together: their RoleBindings go in one ``deletecollection`` per batch
    of 200 (selected by the grant-ID label), not 300 DELETEs; one made before the label existed
    is still deleted, on its own."""
    soon = T0 + timedelta(minutes=5)
    ids = seed_grants(gw.engine, 300, expires_at=soon)
    gw.kube.add_many(bindings(ids, soon))
    old = gw.kube.get_object(RB_API, "RoleBinding", "payments", f"opsgate-grant-{ids[-1]}")
    assert old is not None
    del old["metadata"]["labels"]["opsgate.io/grant-id"]
    gw.kube.add(old)
    gw.kube.clear_requests()
    gw.clock.advance(301)
    assert sorted(gw.grants.sweep()) == ids
    deletes = gw.kube.requests_matching(method="DELETE")
    collections = [r for r in deletes if r.path.endswith("/rolebindings")]
    assert len(collections) == 2
    assert (
        collections[0]
        .query["labelSelector"]
        .startswith("app.kubernetes.io/managed-by=opsgate,opsgate.io/grant-id in (")
    )
    assert [r.path.rsplit("/", 1)[1] for r in deletes if r not in collections] == [
        f"opsgate-grant-{ids[-1]}"
    ]
    assert gw.kube.objects("RoleBinding") == []
    [ended] = [e for e in gw.audit(ids[0]) if e.to_status == "revoked"]
    assert ended.detail["removed"] == {"role_binding_deleted": True, "vault_member_removed": False}


# --- the gate's sweeps and reads -----------------------------------------------------------------


@pytest.fixture
def gate_world(database_url: str) -> Iterator[tuple[Gate, RecordingNotifier, Clock, Engine]]:
    clock = Clock()
    notifier = RecordingNotifier()
    loaded = parse_policy(ACCESS_POLICY)
    with built_gate(
        database_url, policy=lambda: loaded, notifier=notifier, clock=clock, actions={}
    ) as built:
        yield built.gate, notifier, clock, built.engine


def test_pending_expiry_and_escalation_use_a_bounded_number_of_queries(
    gate_world: tuple[Gate, RecordingNotifier, Clock, Engine],
) -> None:
    gate, notifier, clock, engine = gate_world
    ids = seed_pending(engine, 300, clock.now)
    clock.now += timedelta(minutes=31)
    with counting(engine) as statements:
        assert gate.escalate_due() == ids
    assert len(statements) <= 6 + CHAIN_STATEMENTS, statements
    assert gate.escalate_due() == []  # once

    clock.now += timedelta(hours=2)
    with counting(engine) as statements:
        assert gate.expire_pending() == ids
    assert len(statements) <= 6 + CHAIN_STATEMENTS, statements
    assert gate.expire_pending() == []  # idempotent
    assert [(e, s) for _, e, s in notifier.events] == [("escalated", "pending")] * 300 + [
        ("expired", "expired")
    ] * 300
    with engine.connect() as conn:
        audit = conn.execute(
            select(AuditEvent.event, AuditEvent.from_status, AuditEvent.to_status)
            .where(AuditEvent.request_id == ids[7])
            .order_by(AuditEvent.id)
        ).all()
    assert audit == [("escalated", "pending", "pending"), ("expired", "pending", "expired")]


def test_the_lists_behind_app_home_and_status_are_pages_read_in_three_queries(
    gate_world: tuple[Gate, RecordingNotifier, Clock, Engine],
) -> None:
    gate, _, clock, engine = gate_world
    # 300 requests of U0DEV1; U0SRE1 may approve the even ones; U0SRE1 asked for 5 itself
    ids = seed_pending(
        engine, 300, clock.now, approvers=lambda i: ["U0SRE1"] if i % 2 == 0 else ["U0SRE2"]
    )
    own = seed_pending(engine, 5, clock.now, requester=lambda i: "U0SRE1")

    with counting(engine) as statements:
        waiting = gate.pending_for("U0SRE1")
    assert len(statements) <= 3, statements
    even = [i for i in ids if i % 2 == 0]
    assert ([v.id for v in waiting], waiting.total) == (even[:20], 150)
    later = gate.pending_for("U0SRE1", page=8)
    assert ([v.id for v in later], later.total, later.more) == (even[140:], 150, False)
    assert list(gate.pending_for("U0SRE2", page=100)) == []

    with counting(engine) as statements:
        mine = gate.pending_of("U0DEV1", size=15)
    assert len(statements) <= 3, statements
    assert ([v.id for v in mine], mine.total) == (ids[:15], 300)
    assert [v.id for v in gate.pending_of("U0SRE1")] == own

    with counting(engine) as statements:
        latest = gate.latest(requester_id="U0DEV1", limit=5, page=2)
    assert len(statements) <= 3, statements
    assert ([v.id for v in latest], latest.total) == (ids[::-1][5:10], 300)
    # a request's approvals come with its view
    assert all(v.approved_by == () for v in latest)


# --- end to end: a start and the answers with 10,000 active grants ------------------------------


@pytest.fixture
def policy_text() -> str:
    return ACCESS_POLICY


def test_a_start_with_10000_grants_is_ready_at_once_and_every_list_is_a_page(
    tmp_path: Path,
    settings: Settings,
    fake_slack: slack.FakeSlack,
    kube: FakeKubernetes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ends = datetime.now(UTC) + timedelta(hours=2)
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        # U0DEV1 holds 40 of them; the RoleBindings are in the prod cluster, staging has none
        ids = seed_grants(
            engine, MANY, expires_at=ends, grantee=lambda i: "U0DEV1" if i <= 40 else f"U{i:06d}"
        )
    finally:
        engine.dispose()
    kube.add_many(bindings(ids, ends))
    with FakeKubernetes() as staging:
        kubeconfig = write_kubeconfig(tmp_path / "kc-scale", {"prod": kube, "staging": staging})
        caplog.set_level(logging.INFO, logger="approvals.expiry")
        # how long this takes is measured by bench/revocation_lag.py --active 10000 (README,
        # Performance), never asserted here: a test checks what happens, not how fast
        with running_bot(
            settings.model_copy(update={"kubeconfig": str(kubeconfig)}), fake_slack
        ) as bot:

            def started() -> bool:
                ready = bot.http.get(f"{bot.url}/readyz").status_code == 200
                return ready and "first sweep, reminders and drift check done" in caplog.text

            wait_for(started, timeout=30, what="the start")
            assert len(kube.objects("RoleBinding")) == MANY  # the drift check removed nothing

            # /ops grants asked by an approver: every active grant, a page at a time
            answer = ask(bot, "grants", user="U0SRE1")
            assert len(answer["text"]) < 4_000
            assert len(json.dumps(answer)) < 40_000
            lines = answer["text"].splitlines()
            assert lines[0] == "Active grants:"
            assert len([line for line in lines if line.startswith("• ")]) == 20
            assert lines[-1] == (
                "Showing 1 to 20 of 10,000 active grants, the soonest to end first. "
                "Next: `/ops grants --page 2`."
            )
            second = ask(bot, "grants --page 2", user="U0SRE1")["text"]
            assert f"*#{ids[20]}*" in second
            assert second.splitlines()[-1].startswith("Showing 21 to 40 of 10,000 active grants")
            assert "previous: `/ops grants --page 1`" in second
            assert ask(bot, "grants --page 501", user="U0SRE1")["text"] == (
                "There is no page 501: the 10,000 active grants fill 500 page(s) of 20."
            )
            # a grantee sees their own, a page at a time too
            mine = ask(bot, "grants", user="U0DEV1")["text"]
            assert mine.startswith("Your active grants:")
            assert "Showing 1 to 20 of 40 active grants" in mine

            # App Home: at most 10 of them, with how many there are
            published = len(fake_slack.calls_of("views.publish"))
            bot.post(slack.event_callback_body(app_home_opened("U0DEV1")))
            call = wait_for(
                lambda: fake_slack.calls_of("views.publish")[published:], what="App Home"
            )[-1]
            view = call.args["view"]
            view = json.loads(view) if isinstance(view, str) else view
            assert len(view["blocks"]) <= 100
            assert "Showing 10 of 40 active grants, the soonest to end" in json.dumps(view)


def ask(bot: Any, text: str, *, user: str) -> dict[str, Any]:
    """``/ops <text>`` from ``user``; the body the bot posted to the command's response_url."""
    response: httpx.Response
    response, url = bot.command(text, user=user)
    assert response.status_code == 200
    path = "/" + url.split("/", 3)[3]
    calls = wait_for(
        lambda: [c for c in bot.fake_slack.calls if c.path == path], what=f"/ops {text}"
    )
    return dict(calls[-1].args)


# --- the Kubernetes client's cost per call -------------------------------------------------------


def test_the_client_token_refresh_hook_runs_at_most_every_interval(
    tmp_path: Path, kube: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook ``load_kube_config`` installs sets the configuration again before each request
    (re-reading every proxy variable of the environment); opsgate runs it every
    ``REFRESH_HOOK_INTERVAL`` seconds instead, and every request still carries the token."""
    runs: list[int] = []
    set_config = KubeConfigLoader._set_config

    def counted(self: Any, client_configuration: Any) -> None:
        runs.append(1)
        set_config(self, client_configuration)

    monkeypatch.setattr(KubeConfigLoader, "_set_config", counted)
    kube.add_many(bindings(list(range(1, 51)), T0))
    backend = KubernetesBackend(kubeconfig=str(write_kubeconfig(tmp_path / "kc", {"prod": kube})))
    try:
        for i in range(1, 51):
            assert backend.delete_role_binding("prod", "payments", f"opsgate-grant-{i}")
    finally:
        backend.close()
    assert REFRESH_HOOK_INTERVAL >= 10
    assert len(runs) == 2  # loading the kubeconfig, then the first request's refresh
    deletes = kube.requests_matching(method="DELETE")
    assert len(deletes) == 50
    assert {r.headers["authorization"] for r in deletes} == {f"Bearer {kube.token}"}


def test_a_throttled_hook_wraps_the_hook_it_reinstalls() -> None:
    class Configuration:
        refresh_api_key_hook: Any = None

    runs: list[int] = []

    def hook(configuration: Any) -> None:
        runs.append(1)
        configuration.refresh_api_key_hook = hook  # what kube_config's _set_config does

    configuration = Configuration()
    configuration.refresh_api_key_hook = _at_most_every(0.2, hook)
    for _ in range(5):
        configuration.refresh_api_key_hook(configuration)
    assert len(runs) == 1
    assert configuration.refresh_api_key_hook is not hook  # still throttled
    time.sleep(0.25)
    configuration.refresh_api_key_hook(configuration)
    assert len(runs) == 2
