"""ExpiryScheduler: APScheduler wakes the sweep on time; a restarted bot revokes what it missed.

One test lets a 2-second grant expire in real time with the scheduler running; the crash test
moves an injected clock past the expiry while no bot runs, then starts a new one on the same
database, with a real OpenBao holding the Vault side of the grant.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect

from actions.backends.vault import VaultBackend
from approvals.expiry import (
    _INSTANCES,
    EXPIRY_JOB,
    GRANT_STORE,
    REMINDER_JOB,
    ExpiryScheduler,
    fire_expiry,
    fire_reminder,
)
from approvals.lifecycle import Actor
from approvals.models import Grant
from approvals.notifier import GrantView
from tests.fakes.kube import FakeKubernetes
from tests.fakes.openbao import OpenBao
from tests.helpers.bot import wait_for
from tests.helpers.clock import Clock
from tests.helpers.grants import SETTINGS, GrantWorld, make_world

pytest_plugins = ["tests.helpers.vault"]


def real_clock() -> datetime:
    return datetime.now(UTC)


class Started(list[ExpiryScheduler]):
    """The schedulers and worlds of a test, shut down and closed at its end, even on failure."""

    def __init__(self) -> None:
        super().__init__()
        self.worlds: list[GrantWorld] = []

    def world(self, *args: Any, **kw: Any) -> GrantWorld:
        world = make_world(*args, **kw)
        self.worlds.append(world)
        return world


@pytest.fixture
def schedulers() -> Iterator[Started]:
    started = Started()
    yield started
    for scheduler in started:
        scheduler.shutdown()
    for world in started.worlds:
        world.backend.close()
        world.engine.dispose()
        if isinstance(world.vault, VaultBackend):
            world.vault.close()


def scheduler_for(world: GrantWorld, started: Started, **kw: Any) -> ExpiryScheduler:
    grants = kw.pop("grants", world.grants)
    scheduler = ExpiryScheduler(world.engine, grants=grants, clock=world.clock, **kw)
    started.append(scheduler)
    return scheduler


def jobs(world: GrantWorld, instance: str) -> dict[str, float]:
    """The wake-ups the running scheduler named ``instance`` holds: job ID to run time (epoch s)."""
    scheduler = _INSTANCES[instance]
    return {
        job.id: job.next_run_time.timestamp()
        for job in scheduler._scheduler.get_jobs(jobstore=GRANT_STORE)
    }


def test_a_two_second_grant_expires_in_real_time(
    tmp_path: Path,
    database_url: str,
    kube: FakeKubernetes,
    schedulers: Started,
) -> None:
    world = schedulers.world(tmp_path, database_url, kube, clock=real_clock)  # type: ignore[arg-type]
    scheduler = scheduler_for(world, schedulers, sweep_interval=3600, instance="realtime")
    scheduler.start()
    grant = world.grant(duration=2)
    assert world.binding(grant.id) is not None

    wait_for(lambda: world.binding(grant.id) is None, timeout=15, what="the grant to expire")

    wait_for(lambda: world.notifier.of(grant.id) == ["started", "expired"], what="the notice")
    row = world.row(grant.id)
    assert row.status == "revoked"
    assert row.revoked_at is not None
    assert row.revoked_at >= row.expires_at  # never early
    [ended] = [e for e in world.audit(grant.id) if e.to_status == "revoked"]
    assert ended.detail["why"] == "expired"
    assert ended.detail["lag_seconds"] >= 0
    assert jobs(world, "realtime") == {}  # the run job is gone from the store


def test_the_reminder_fires_before_the_end_in_real_time(
    tmp_path: Path,
    database_url: str,
    kube: FakeKubernetes,
    schedulers: Started,
) -> None:
    world = schedulers.world(tmp_path, database_url, kube, clock=real_clock)  # type: ignore[arg-type]
    scheduler = scheduler_for(
        world, schedulers, sweep_interval=3600, reminder_before=2, instance="reminder"
    )
    scheduler.start()
    grant = world.grant(duration=4)
    wait_for(
        lambda: world.notifier.of(grant.id) == ["started", "reminder", "expired"],
        timeout=15,
        what="reminder then expiry",
    )
    row = world.row(grant.id)
    assert row.reminded_at is not None
    assert row.reminded_at <= row.expires_at - timedelta(seconds=1)


def test_two_stored_wake_ups_follow_the_soonest_grant_however_many_there_are(
    tmp_path: Path,
    database_url: str,
    kube: FakeKubernetes,
    schedulers: Started,
) -> None:
    # a clock a year ahead: the stored jobs never come due during the test
    world = schedulers.world(
        tmp_path, database_url, kube, clock=Clock(datetime.now(UTC) + timedelta(days=365))
    )
    scheduler = scheduler_for(world, schedulers, instance="stored")
    scheduler.start()
    assert jobs(world, "stored") == {}  # no grant, nothing to wake for

    def wake_ups(grant: GrantView) -> dict[str, float]:
        return {
            EXPIRY_JOB: grant.expires_at.timestamp(),
            REMINDER_JOB: (grant.expires_at - timedelta(minutes=10)).timestamp(),
        }

    long = world.grant(duration=7200)
    assert jobs(world, "stored") == wake_ups(long)
    short = world.grant(duration=3600)  # sooner: both move earlier
    assert jobs(world, "stored") == wake_ups(short)
    middle = world.grant(duration=5400)  # later: nothing moves, and no job per grant
    assert jobs(world, "stored") == wake_ups(short)
    scheduler.shutdown()

    # a new process with the same instance name sets them from the database at its start
    again = scheduler_for(world, schedulers, grants=world.service(), instance="stored")
    again.start()
    assert jobs(world, "stored") == wake_ups(short)
    # ending the soonest grant early leaves its wake-up; when it runs it finds nothing due and
    # is set again at the next grant's end (the reminder likewise)
    again.grants.revoke(short.id, actor=Actor("U0SRE1"))
    assert jobs(world, "stored") == wake_ups(short)
    fire_expiry("stored")
    fire_reminder("stored")
    assert jobs(world, "stored") == wake_ups(middle)
    assert world.row(middle.id).status == "active"
    # an extension that makes the soonest grant end later leaves the earlier wake-up as it is
    again.grants.extend(middle.id, 3600, actor=Actor("U0SRE1"))
    assert jobs(world, "stored") == wake_ups(middle)
    fire_expiry("stored")
    assert jobs(world, "stored")[EXPIRY_JOB] == long.expires_at.timestamp()


def test_periodic_callbacks_run_and_two_instances_need_two_names(
    tmp_path: Path,
    database_url: str,
    kube: FakeKubernetes,
    schedulers: Started,
) -> None:
    world = schedulers.world(tmp_path, database_url, kube)
    scheduler = scheduler_for(world, schedulers, instance="periodic")
    calls: list[int] = []
    done = threading.Event()

    def tick() -> None:
        calls.append(1)
        if len(calls) >= 2:
            done.set()

    scheduler.add_periodic("pending-ttl", tick, 0.05)
    scheduler.start()
    assert done.wait(10), "the periodic callback did not run twice"
    twin = scheduler_for(world, schedulers, instance="periodic")
    with pytest.raises(RuntimeError, match="'periodic' is running"):
        twin.start()
    assert scheduler.running
    # no table of its own: pods that come and go leave nothing behind in the database
    assert not [n for n in inspect(world.engine).get_table_names() if n.startswith("opsgate_jobs")]


def test_crash_then_restart_after_the_expiry_revokes_within_the_start(
    tmp_path: Path,
    database_url: str,
    kube: FakeKubernetes,
    openbao: OpenBao,
    schedulers: Started,
) -> None:
    client = openbao.client()
    entity, group = f"alice-{uuid.uuid4().hex[:8]}", f"prod-edit-{uuid.uuid4().hex[:8]}"
    entity_id = client.secrets.identity.create_or_update_entity_by_name(name=entity)["data"]["id"]
    client.secrets.identity.create_or_update_group_by_name(
        name=group, group_type="internal", policies=["prod-edit"]
    )
    vault = VaultBackend(url=openbao.url, token=openbao.root_token)
    clock = Clock(datetime.now(UTC) + timedelta(days=365))
    world = schedulers.world(tmp_path, database_url, kube, vault=vault, clock=clock)
    rule = {
        **SETTINGS,
        "vault_groups": {"edit": group},
        "identity": {"kubernetes_user": "alice@example.com", "vault_entity": entity},
    }

    first = scheduler_for(world, schedulers, instance="crash")
    first.start()
    grant = world.grant(role="edit", duration=1800, settings=rule)
    assert world.binding(grant.id) is not None
    assert vault.group_member_ids(group) == [entity_id]  # membership exists during the grant
    assert jobs(world, "crash")[EXPIRY_JOB] == grant.expires_at.timestamp()
    first.shutdown(wait=False)  # the bot dies, and its wake-ups with it

    clock.advance(1800 + 3600)  # an hour past the end, with no bot running

    restarted = scheduler_for(world, schedulers, grants=world.service(), instance="crash")
    restarted.start()

    assert world.binding(grant.id) is None
    assert vault.group_member_ids(group) == []
    row = world.row(grant.id)
    assert (row.status, row.revoke_reason, row.revoked_at) == ("revoked", "expired", clock.now)
    [ended] = [e for e in world.audit(grant.id) if e.to_status == "revoked"]
    assert ended.event == "grant_expired"
    assert ended.created_at == clock.now
    assert ended.detail["revoked_at"] == clock.now.isoformat()
    lag = (clock.now - row.expires_at).total_seconds()
    assert lag >= 3600
    assert ended.detail["lag_seconds"] == round(lag, 3)
    assert ended.detail["removed"] == {"role_binding_deleted": True, "vault_member_removed": True}
    assert world.notifier.of(grant.id) == ["started", "expired"]
    with world.sessions() as session:
        assert session.get(Grant, grant.id) is not None


def test_a_clock_behind_the_wall_clock_does_not_wake_the_sweep_in_a_loop(
    tmp_path: Path,
    database_url: str,
    kube: FakeKubernetes,
    schedulers: Started,
) -> None:
    """With an injected clock an hour behind the wall clock, a grant's end is already past by
    the wall clock: its wake-up runs at once, finds nothing due by the service's clock, and is
    not set again in the past (which would run it again at once, for ever)."""
    clock = Clock(datetime.now(UTC) - timedelta(hours=2))
    world = schedulers.world(tmp_path, database_url, kube, clock=clock)
    sweeps: list[int] = []
    grants = world.service()
    sweep = grants.sweep

    def counted() -> list[int]:
        sweeps.append(1)
        return sweep()

    grants.sweep = counted  # type: ignore[method-assign]
    scheduler = scheduler_for(world, schedulers, grants=grants, instance="behind")
    scheduler.start()
    grant = world.grant(duration=3600, grants=grants)  # ends an hour ago, by the wall clock
    wait_for(lambda: len(sweeps) >= 2, what="the expiry wake-up")
    time.sleep(0.5)
    assert len(sweeps) == 2  # the start's, and the wake-up's, once
    assert world.row(grant.id).status == "active"
    assert EXPIRY_JOB not in jobs(world, "behind")
