"""GrantService on a real database, the fake Kubernetes API over HTTP, an injected clock.

Expiry, reminders, extension, early revocation, interrupted revocations and drift are all driven
by moving the clock by hand; nothing sleeps. The two-instances test runs on PostgreSQL only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from actions.access import (
    EXPIRES_AT_ANNOTATION,
    AccessParams,
    rfc3339,
    role_binding_body,
)
from actions.base import Target
from approvals.db import make_engine, make_sessionmaker
from approvals.grants import (
    ExtensionRefused,
    GrantNotActive,
    GrantService,
    UnknownGrant,
)
from approvals.lifecycle import Actor
from approvals.models import AuditEvent, Grant
from tests.fakes.kube import FakeKubernetes
from tests.helpers.clock import T0
from tests.helpers.grants import (
    RB_API,
    SETTINGS,
    GrantWorld,
    binding_deletes,
    make_world,
)


@pytest.fixture
def gw(tmp_path: Path, database_url: str, kube: FakeKubernetes) -> Iterator[GrantWorld]:
    world = make_world(tmp_path, database_url, kube)
    yield world
    world.backend.close()
    world.engine.dispose()


# --- activation --------------------------------------------------------------------------------


def test_the_clock_starts_when_the_grant_takes_effect(gw: GrantWorld) -> None:
    request_id = gw.request()
    gw.clock.advance(1800)  # approved half an hour after it was asked for
    params = AccessParams(namespace="payments", role="edit", duration_seconds=7200)
    preview = gw.access.preview(params, target=Target("prod", "prod", "payments", SETTINGS))
    target = Target("prod", "prod", "payments", {**SETTINGS, "request_id": request_id})
    outcome = gw.access.execute(params, target=target, preview=preview)
    view = gw.grants.activate(request_id, outcome.facts, Actor("opsgate"), summary="granted")

    assert view.id == request_id
    assert view.started_at == T0 + timedelta(minutes=30)
    assert view.expires_at == T0 + timedelta(minutes=30, hours=2)
    assert (view.status, view.role, view.grantee_id) == ("active", "edit", "U0DEV1")
    assert view.approver_ids == ("U0SRE1", "U0SRE2")
    binding = gw.binding(request_id)
    assert binding is not None
    assert binding["metadata"]["annotations"][EXPIRES_AT_ANNOTATION] == "2026-11-21T05:30:00Z"
    assert gw.request_status(request_id) == "active"
    [started] = [e for e in gw.audit(request_id) if e.event == "grant_started"]
    assert (started.from_status, started.to_status) == ("executing", "active")
    assert started.detail["grant"]["role_binding"] == f"opsgate-grant-{request_id}"
    assert gw.notifier.of(request_id) == ["started"]
    with pytest.raises(GrantNotActive, match="not executing"):
        gw.grants.activate(request_id, outcome.facts, Actor("opsgate"))


def test_active_lists_by_end_and_by_grantee(gw: GrantWorld) -> None:
    long = gw.grant(duration=7200)
    short = gw.grant(duration=600, requester="U0DEV2")
    assert [g.id for g in gw.grants.active()] == [short.id, long.id]
    assert [g.id for g in gw.grants.active("U0DEV2")] == [short.id]
    assert list(gw.grants.active("U0NOBODY")) == []
    # a page at a time, with how many there are in all
    third = gw.grant(duration=900)
    first = gw.grants.active(size=2)
    assert ([g.id for g in first], first.total, first.more) == ([short.id, third.id], 3, True)
    second = gw.grants.active(page=2, size=2)
    assert ([g.id for g in second], second.total, second.more) == ([long.id], 3, False)
    assert (len(gw.grants.active(page=3, size=2)), gw.grants.active(page=3, size=2).total) == (
        0,
        3,
    )
    with pytest.raises(ValueError, match="out of range"):
        gw.grants.active(page=0)
    with pytest.raises(UnknownGrant):
        gw.grants.get(9999)


# --- expiry ------------------------------------------------------------------------------------


def test_sweep_revokes_exactly_when_due_and_audits_when_and_why(gw: GrantWorld) -> None:
    grant = gw.grant(duration=3600)
    gw.clock.advance(3599)
    assert gw.grants.sweep() == []
    assert gw.binding(grant.id) is not None

    gw.clock.advance(31)
    assert gw.grants.sweep() == [grant.id]
    assert gw.binding(grant.id) is None
    row = gw.row(grant.id)
    assert (row.status, row.revoked_at, row.revoke_reason) == ("revoked", gw.clock.now, "expired")
    assert gw.request_status(grant.id) == "revoked"
    [ended] = [e for e in gw.audit(grant.id) if e.to_status == "revoked"]
    assert ended.event == "grant_expired"
    assert ended.actor_id == "opsgate"
    assert ended.detail["why"] == "expired"
    assert ended.detail["expires_at"] == "2026-11-21T04:00:00Z"
    assert ended.detail["lag_seconds"] == 30.0
    assert ended.detail["removed"] == {"role_binding_deleted": True, "vault_member_removed": False}
    assert gw.notifier.of(grant.id) == ["started", "expired"]

    assert gw.grants.sweep() == []  # idempotent
    assert gw.notifier.of(grant.id) == ["started", "expired"]


def test_subscribers_hear_every_event_after_the_grantee_even_when_telling_failed(
    gw: GrantWorld,
) -> None:
    """:meth:`GrantService.subscribe`: each listener gets (grant, event) after the notifier,
    in the order subscribed, also when the grantee could not be told (the end is committed)."""
    heard: list[tuple[str, int, str, str | None]] = []
    gw.grants.subscribe(lambda view, event: heard.append(("first", view.id, event, view.status)))
    gw.grants.subscribe(lambda view, event: heard.append(("second", view.id, event, None)))
    grant = gw.grant(duration=3600)
    gw.notifier.fail = True
    gw.clock.advance(3601)
    assert gw.grants.sweep() == [grant.id]
    assert heard == [
        ("first", grant.id, "started", "active"),
        ("second", grant.id, "started", None),
        ("first", grant.id, "expired", "revoked"),
        ("second", grant.id, "expired", None),
    ]


def test_sweep_works_in_batches(gw: GrantWorld) -> None:
    ids = [gw.grant(duration=600).id for _ in range(5)]
    small = gw.service(batch_size=2, workers=3)
    gw.clock.advance(601)
    assert sorted(small.sweep()) == ids
    assert all(gw.binding(i) is None for i in ids)


def test_an_interrupted_revocation_is_finished_by_a_later_sweep(gw: GrantWorld) -> None:
    grant = gw.grant(duration=600)
    # a process claimed it, then died before touching the cluster
    with gw.sessions.begin() as session:
        session.execute(
            update(Grant)
            .where(Grant.id == grant.id)
            .values(status="revoking", revoke_reason="expired", updated_at=gw.clock.now)
        )
    gw.clock.advance(30)
    assert gw.grants.sweep() == []  # maybe still in progress elsewhere
    assert gw.binding(grant.id) is not None
    gw.clock.advance(31)  # retry_after (60 s) has passed
    assert gw.grants.sweep() == [grant.id]
    assert gw.binding(grant.id) is None
    assert gw.request_status(grant.id) == "revoked"


def test_a_failed_removal_is_audited_and_retried(gw: GrantWorld) -> None:
    grant = gw.grant(duration=600)
    gw.clock.advance(600)
    gw.kube.fail_next(count=1, status=500, method="DELETE", path_contains="rolebindings")
    assert gw.grants.sweep() == []
    assert gw.row(grant.id).status == "revoking"
    assert gw.request_status(grant.id) == "active"
    failed = [e for e in gw.audit(grant.id) if e.event == "revoke_failed"]
    assert len(failed) == 1
    assert failed[0].detail["reason"] == "expired"

    gw.clock.advance(61)
    assert gw.grants.sweep() == [grant.id]
    assert gw.binding(grant.id) is None
    assert gw.row(grant.id).status == "revoked"


def test_a_batch_records_each_end_at_its_own_removal_and_keeps_the_failed_one(
    gw: GrantWorld,
) -> None:
    """One transaction records a whole batch: each grant's ``revoked_at`` (and its audit event) is
    the moment its own removal was confirmed; a removal that failed leaves only that grant
    ``revoking``, audited, and retried later. (The RoleBindings go one at a time here: the API
    server refuses to delete them together, as it does when opsgate's role lacks
    ``deletecollection``.)"""
    ids = [gw.grant(duration=600).id for _ in range(4)]
    lock = threading.Lock()

    def ticking() -> datetime:  # each reading of the clock is one second later
        with lock:
            gw.clock.advance(1)
            return gw.clock.now

    service = gw.service(clock=ticking, workers=1)
    gw.clock.advance(600)
    gw.kube.fail_next(count=1, status=403, reason="Forbidden", method="DELETE")  # the collection
    gw.kube.fail_next(count=1, status=500, method="DELETE", path_contains=f"opsgate-grant-{ids[2]}")
    assert service.sweep() == [ids[0], ids[1], ids[3]]
    rows = {i: gw.row(i) for i in ids}
    assert rows[ids[2]].status == "revoking"
    assert gw.request_status(ids[2]) == "active"
    assert [e.event for e in gw.audit(ids[2])][-1] == "revoke_failed"
    revoked_at = []
    for i in (ids[0], ids[1], ids[3]):
        row = rows[i]
        assert row.status == "revoked"
        assert gw.request_status(i) == "revoked"
        [ended] = [e for e in gw.audit(i) if e.to_status == "revoked"]
        assert row.revoked_at is not None
        assert ended.created_at == row.revoked_at
        assert ended.detail["revoked_at"] == row.revoked_at.isoformat()
        assert ended.detail["lag_seconds"] == (row.revoked_at - row.expires_at).total_seconds()
        revoked_at.append(row.revoked_at)
    assert revoked_at == sorted(set(revoked_at))  # one moment per removal, in order
    assert sorted(gid for gid, event, _ in gw.notifier.events if event == "expired") == [
        ids[0],
        ids[1],
        ids[3],
    ]

    gw.clock.advance(61)
    assert service.sweep() == [ids[2]]
    assert gw.row(ids[2]).status == "revoked"
    assert gw.binding(ids[2]) is None


def test_removal_is_idempotent_when_the_binding_is_already_gone(gw: GrantWorld) -> None:
    grant = gw.grant(duration=600)
    assert gw.backend.delete_role_binding("prod", "payments", grant.role_binding)
    gw.clock.advance(600)
    assert gw.grants.sweep() == [grant.id]
    [ended] = [e for e in gw.audit(grant.id) if e.to_status == "revoked"]
    assert ended.detail["removed"]["role_binding_deleted"] is False


# --- early revocation --------------------------------------------------------------------------


def test_early_revocation_by_an_approver(gw: GrantWorld) -> None:
    grant = gw.grant(duration=3600)
    assert gw.grants.may_revoke(grant.id, "U0DEV1")  # the grantee
    assert gw.grants.may_revoke(grant.id, "U0SRE2")  # an approver of the request
    assert not gw.grants.may_revoke(grant.id, "U0DEV2")

    gw.clock.advance(300)
    view = gw.grants.revoke(grant.id, actor=Actor("U0SRE2"), reason="incident over")
    assert view.status == "revoked"
    assert view.revoked_by == "U0SRE2"
    assert view.revoke_reason == "revoked early by <@U0SRE2>: incident over"
    assert view.revoked_at == T0 + timedelta(minutes=5)
    assert gw.binding(grant.id) is None
    [ended] = [e for e in gw.audit(grant.id) if e.to_status == "revoked"]
    assert (ended.event, ended.actor_id) == ("grant_revoked", "U0SRE2")
    assert gw.notifier.of(grant.id) == ["started", "revoked"]
    with pytest.raises(GrantNotActive, match="already revoked"):
        gw.grants.revoke(grant.id, actor=Actor("U0DEV1"))
    with pytest.raises(UnknownGrant):
        gw.grants.revoke(4242, actor=Actor("U0DEV1"))


# --- extension ---------------------------------------------------------------------------------


def test_extension_moves_the_end_in_the_database_and_the_cluster(gw: GrantWorld) -> None:
    grant = gw.grant(duration=3600)  # max_duration 4h
    gw.clock.advance(3000)
    assert gw.grants.remind_due() == [grant.id]

    view = gw.grants.extend(grant.id, 3600, actor=Actor("U0SRE1"))
    assert view.expires_at == T0 + timedelta(hours=2)
    assert view.duration_seconds == 7200
    assert view.reminded_at is None  # re-armed
    binding = gw.binding(grant.id)
    assert binding is not None
    assert binding["metadata"]["annotations"][EXPIRES_AT_ANNOTATION] == "2026-11-21T05:00:00Z"
    [extended] = [e for e in gw.audit(grant.id) if e.event == "grant_extended"]
    assert extended.detail == {
        "seconds": 3600,
        "from": "2026-11-21T04:00:00Z",
        "to": "2026-11-21T05:00:00Z",
        "duration_seconds": 7200,
    }
    assert extended.actor_id == "U0SRE1"
    assert gw.notifier.of(grant.id) == ["started", "reminder", "extended"]

    gw.clock.advance(700)  # past the old end
    assert gw.grants.sweep() == []
    assert gw.binding(grant.id) is not None
    assert gw.grants.drift_check() == []  # the annotation was moved too

    with pytest.raises(ExtensionRefused, match=r"at most 2h"):
        gw.grants.extend(grant.id, 3 * 3600, actor=Actor("U0SRE1"))
    assert gw.grants.extend(grant.id, 7200, actor=Actor("U0SRE1")).duration_seconds == 4 * 3600
    with pytest.raises(ExtensionRefused, match=r"at most 0s"):
        gw.grants.extend(grant.id, 60, actor=Actor("U0SRE1"))
    with pytest.raises(ExtensionRefused, match="positive"):
        gw.grants.extend(grant.id, 0, actor=Actor("U0SRE1"))


def test_an_ended_grant_cannot_be_extended(gw: GrantWorld) -> None:
    grant = gw.grant(duration=600)
    gw.clock.advance(600)
    with pytest.raises(GrantNotActive, match="already ended"):  # overdue, not yet swept
        gw.grants.extend(grant.id, 60, actor=Actor("U0DEV1"))
    gw.grants.sweep()
    with pytest.raises(GrantNotActive):
        gw.grants.extend(grant.id, 60, actor=Actor("U0DEV1"))


# --- reminders ---------------------------------------------------------------------------------


def test_the_reminder_goes_out_once_ten_minutes_before_the_end(gw: GrantWorld) -> None:
    grant = gw.grant(duration=3600)
    short = gw.grant(duration=300)  # shorter than the reminder lead: no reminder
    gw.clock.advance(3600 - 601)
    assert gw.grants.remind_due() == []
    gw.clock.advance(1)
    assert gw.grants.remind_due() == [grant.id]
    assert gw.grants.remind_due() == []
    assert gw.row(grant.id).reminded_at == gw.clock.now
    assert gw.notifier.of(grant.id) == ["started", "reminder"]
    assert gw.notifier.of(short.id) == ["started"]


# --- drift -------------------------------------------------------------------------------------


def test_drift_check_removes_what_should_not_exist(gw: GrantWorld) -> None:
    active = gw.grant(duration=3600)
    revoked = gw.grant(duration=3600)
    gw.grants.revoke(revoked.id, actor=Actor("U0DEV1"))
    # someone re-creates the revoked grant's binding; an unknown one carries opsgate's label
    gw.kube.add(
        role_binding_body(
            grant_id=revoked.id,
            namespace="payments",
            cluster_role="edit",
            kubernetes_user="alice@example.com",
            expires_at=T0 + timedelta(hours=1),
        )
    )
    gw.kube.add(
        role_binding_body(
            grant_id=777,
            namespace="checkout",
            cluster_role="edit",
            kubernetes_user="mallory@example.com",
            expires_at=T0 + timedelta(days=30),
        )
    )
    unmanaged = role_binding_body(
        grant_id=778,
        namespace="checkout",
        cluster_role="view",
        kubernetes_user="bob@example.com",
        expires_at=T0,
    )
    unmanaged["metadata"]["labels"] = {}
    unmanaged["metadata"]["name"] = "hand-made"
    gw.kube.add(unmanaged)
    in_flight = gw.request()  # approved, executing: its binding exists before its grant row
    gw.kube.add(
        role_binding_body(
            grant_id=in_flight,
            namespace="payments",
            cluster_role="view",
            kubernetes_user="alice@example.com",
            expires_at=T0 + timedelta(hours=1),
        )
    )

    removed = gw.grants.drift_check()

    assert sorted(removed) == [
        "prod/checkout/opsgate-grant-777",
        f"prod/payments/opsgate-grant-{revoked.id}",
    ]
    assert gw.binding(active.id) is not None
    assert gw.binding(revoked.id) is None
    assert gw.binding(777, "checkout") is None
    assert gw.kube.get_object(RB_API, "RoleBinding", "checkout", "hand-made") is not None
    assert gw.binding(in_flight) is not None
    assert [e.event for e in gw.audit(revoked.id)][-1] == "drift_removed"
    with gw.sessions() as session:
        orphan = session.scalars(
            select(AuditEvent).where(
                AuditEvent.event == "drift_removed", AuditEvent.request_id.is_(None)
            )
        ).one()
    assert orphan.detail["role_binding"] == "opsgate-grant-777"
    assert orphan.detail["subjects"][0]["name"] == "mallory@example.com"
    drift = [(gid, status) for gid, event, status in gw.notifier.events if event == "drift_removed"]
    assert sorted(drift) == sorted([(777, "drift"), (revoked.id, "revoked")])
    assert gw.grants.drift_check() == []


def test_drift_check_ends_a_grant_whose_binding_says_it_expired(gw: GrantWorld) -> None:
    grant = gw.grant(duration=3600)
    body = role_binding_body(
        grant_id=grant.id,
        namespace="payments",
        cluster_role="view",
        kubernetes_user="alice@example.com",
        expires_at=T0 + timedelta(minutes=5),
    )
    gw.kube.add(body)
    gw.clock.advance(301)
    assert gw.grants.drift_check() == [f"prod/payments/opsgate-grant-{grant.id}"]
    row = gw.row(grant.id)
    assert row.status == "revoked"
    assert row.revoke_reason == (
        f"drift: RoleBinding payments/opsgate-grant-{grant.id} says it expired at "
        f"{rfc3339(T0 + timedelta(minutes=5))}"
    )
    assert gw.binding(grant.id) is None
    assert gw.notifier.of(grant.id) == ["started", "drift_removed"]


# --- several instances -------------------------------------------------------------------------


def test_two_instances_revoke_each_grant_exactly_once(gw: GrantWorld) -> None:
    if make_url(gw.database_url).get_backend_name() != "postgresql":
        pytest.skip("needs PostgreSQL (OPSGATE_TEST_DATABASE_URL): SQLite serializes writers")
    ids = [gw.grant(duration=600).id for _ in range(60)]
    other_engine = make_engine(gw.database_url)
    first = gw.service(batch_size=7, workers=4)
    second = gw.service(sessions=make_sessionmaker(other_engine), batch_size=7, workers=4)
    gw.kube.clear_requests()
    gw.clock.advance(600)
    results: dict[str, list[int]] = {}
    barrier = threading.Barrier(2)

    def run(name: str, service: GrantService) -> None:
        barrier.wait()
        results[name] = service.sweep() + service.sweep()

    threads = [
        threading.Thread(target=run, args=("first", first)),
        threading.Thread(target=run, args=("second", second)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other_engine.dispose()

    assert sorted(results["first"] + results["second"]) == ids
    assert [binding_deletes(gw.kube, "payments", i) for i in ids] == [1] * len(ids)
    with gw.sessions() as session:
        ends = session.execute(
            select(AuditEvent.request_id, func.count())
            .where(AuditEvent.to_status == "revoked")
            .group_by(AuditEvent.request_id)
        ).all()
    assert sorted(ends) == [(i, 1) for i in ids]
    assert sorted(gid for gid, event, _ in gw.notifier.events if event == "expired") == ids
