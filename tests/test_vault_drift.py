"""Vault group memberships: a grant's end removes only what it added, and the drift check removes
the members of opsgate's groups that no active grant accounts for (issue 15, item 5).

Against the real OpenBao (``tests.fakes.openbao``), the fake cluster and the test database
(SQLite, or PostgreSQL with ``OPSGATE_TEST_DATABASE_URL``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from actions.backends.vault import VaultBackend
from approvals.lifecycle import Actor
from approvals.models import AuditEvent
from approvals.policy import PolicyError, parse_policy
from approvals.policy.rules import rule_settings
from approvals.vault_drift import VaultDriftCheck, policy_vault_groups
from bot.grant_blocks import grant_notice
from tests.fakes.kube import FakeKubernetes
from tests.fakes.openbao import OpenBao
from tests.helpers.grants import SETTINGS, GrantWorld, make_world
from tests.helpers.policy import policy

pytest_plugins = ["tests.helpers.vault"]

SRE = Actor("U0SRE1")


@pytest.fixture
def vault(openbao: OpenBao) -> Iterator[VaultBackend]:
    backend = VaultBackend(url=openbao.url, token=openbao.root_token)
    yield backend
    backend.close()


@pytest.fixture
def world(
    tmp_path: Path, database_url: str, kube: FakeKubernetes, vault: VaultBackend
) -> Iterator[GrantWorld]:
    made = make_world(tmp_path, database_url, kube, vault=vault)
    yield made
    made.backend.close()
    made.engine.dispose()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def entity(openbao: OpenBao, name: str) -> str:
    """A new identity entity named ``name``; returns its ID."""
    data = openbao.client().secrets.identity.create_or_update_entity_by_name(name=name)["data"]
    return str(data["id"])


def group(openbao: OpenBao, name: str, members: list[str] | None = None) -> str:
    """A new internal identity group named ``name`` with ``members`` (entity IDs)."""
    openbao.client().secrets.identity.create_or_update_group_by_name(
        name=name, group_type="internal", member_entity_ids=members or []
    )
    return name


def members(openbao: OpenBao, name: str) -> list[str]:
    data = openbao.client().secrets.identity.read_group_by_name(name=name)["data"]
    return list(data.get("member_entity_ids") or [])


def rule_for(entity_name: str, group_name: str) -> dict[str, Any]:
    return {
        **SETTINGS,
        "vault_groups": {"edit": group_name},
        "identity": {"kubernetes_user": f"{entity_name}@example.com", "vault_entity": entity_name},
    }


def ended_detail(world: GrantWorld, grant_id: int) -> dict[str, Any]:
    [ended] = [e for e in world.audit(grant_id) if e.to_status == "revoked"]
    return dict(ended.detail["removed"])


# --- a grant's end removes only the membership it added -----------------------------------------


def test_a_member_from_before_the_grant_stays_after_it_ends(
    world: GrantWorld, openbao: OpenBao
) -> None:
    name = unique("bob")
    bob = entity(openbao, name)
    readers = group(openbao, unique("opsgate-readers"), [bob])  # made a member by hand

    grant = world.grant(role="edit", settings=rule_for(name, readers))
    row = world.row(grant.id)
    assert row.vault_member_added is False
    [started] = [e for e in world.audit(grant.id) if e.event == "grant_started"]
    assert started.detail["grant"]["vault_member_before"] is True

    world.grants.revoke(grant.id, actor=SRE, reason="done")

    assert members(openbao, readers) == [bob]  # the grant did not add it: it stays
    assert world.binding(grant.id) is None
    assert ended_detail(world, grant.id) == {
        "role_binding_deleted": True,
        "vault_member_removed": False,
        "vault_member_kept": "the entity was a member of the group before the grant",
    }


def test_a_grant_that_added_the_member_removes_it_at_its_end(
    world: GrantWorld, openbao: OpenBao
) -> None:
    name = unique("alice")
    alice = entity(openbao, name)
    writers = group(openbao, unique("opsgate-writers"))

    grant = world.grant(role="edit", settings=rule_for(name, writers))
    assert world.row(grant.id).vault_member_added is True
    assert members(openbao, writers) == [alice]

    world.grants.revoke(grant.id, actor=SRE, reason="done")

    assert members(openbao, writers) == []
    assert ended_detail(world, grant.id) == {
        "role_binding_deleted": True,
        "vault_member_removed": True,
    }


def test_overlapping_grants_keep_the_membership_until_the_last_one_ends(
    world: GrantWorld, openbao: OpenBao
) -> None:
    name = unique("alice")
    alice = entity(openbao, name)
    writers = group(openbao, unique("opsgate-writers"))
    rule = rule_for(name, writers)

    first = world.grant(role="edit", settings=rule)
    second = world.grant(role="edit", settings=rule, namespace="checkout")
    # the second found the member the first added, and joins its chain
    assert world.row(second.id).vault_member_added is True
    assert members(openbao, writers) == [alice]

    world.grants.revoke(first.id, actor=SRE, reason="first done")
    assert members(openbao, writers) == [alice]  # the second still needs it
    assert ended_detail(world, first.id)["vault_member_kept"] == (
        f"active grant #{second.id} of the same entity still needs it"
    )

    world.grants.revoke(second.id, actor=SRE, reason="second done")
    assert members(openbao, writers) == []
    assert ended_detail(world, second.id)["vault_member_removed"] is True


def test_overlapping_grants_that_expire_together_remove_the_membership(
    world: GrantWorld, openbao: OpenBao
) -> None:
    name = unique("alice")
    entity(openbao, name)
    writers = group(openbao, unique("opsgate-writers"))
    rule = rule_for(name, writers)
    grants = [
        world.grant(role="edit", settings=rule, duration=600, namespace=ns)
        for ns in ("payments", "checkout")
    ]

    world.clock.advance(601)
    assert sorted(world.grants.sweep()) == sorted(g.id for g in grants)

    # both ended in one batch: neither is left to need it
    assert members(openbao, writers) == []


# --- the drift check of Vault groups ------------------------------------------------------------


def drift_events(world: GrantWorld) -> list[AuditEvent]:
    with world.sessions() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.request_id.is_(None), AuditEvent.event == "drift_removed")
                .order_by(AuditEvent.id)
            )
        )


def test_drift_removes_and_reports_members_no_grant_accounts_for(
    world: GrantWorld, openbao: OpenBao
) -> None:
    name = unique("alice")
    alice = entity(openbao, name)
    mallory = entity(openbao, unique("mallory"))
    carol = entity(openbao, unique("carol"))
    writers = group(openbao, unique("opsgate-writers"))
    shared = group(openbao, unique("shared-admins"), [carol])
    grant = world.grant(role="edit", settings=rule_for(name, writers))
    openbao.client().secrets.identity.create_or_update_group_by_name(
        name=writers, group_type="internal", member_entity_ids=[alice, mallory]
    )  # someone added mallory by hand
    service = world.service(vault_groups=lambda: {writers: False, shared: True})

    removed = service.drift_check()

    assert removed == [f"vault:{writers}/{mallory}"]
    assert members(openbao, writers) == [alice]  # the active grant accounts for alice
    assert members(openbao, shared) == [carol]  # managed elsewhere: left alone
    assert world.row(grant.id).status == "active"
    [event] = drift_events(world)
    assert (event.action, event.target, event.actor_id) == (
        "access",
        f"Vault group {writers}",
        "opsgate",
    )
    assert event.detail["vault_group"] == writers
    assert event.detail["vault_entity_id"] == mallory
    [view] = [v for v in world.notifier.views if v.status == "drift"]
    assert (view.vault_group, view.vault_entity, view.role_binding) == (writers, mallory, "")
    text, _ = grant_notice(view, "drift_removed", datetime.now(UTC))
    assert text == (
        f":warning: Drift: Vault entity {mallory} was removed from identity group {writers} "
        "(drift: no active grant accounts for this member)."
    )
    assert service.drift_check() == []  # nothing left to remove


def test_a_member_from_before_a_grant_is_drift_in_a_dedicated_group(
    world: GrantWorld, openbao: OpenBao
) -> None:
    name = unique("bob")
    bob = entity(openbao, name)
    readers = group(openbao, unique("opsgate-readers"), [bob])
    service = world.service(vault_groups=lambda: {readers: False})
    grant = world.grant(role="edit", settings=rule_for(name, readers), grants=service)

    assert service.drift_check() == []  # the active grant accounts for bob
    service.revoke(grant.id, actor=SRE, reason="done")
    assert members(openbao, readers) == [bob]  # the grant's end leaves what it did not add

    assert service.drift_check() == [f"vault:{readers}/{bob}"]  # a dedicated group: drift
    assert members(openbao, readers) == []


def test_drift_skips_a_group_that_does_not_exist_and_checks_the_others(
    world: GrantWorld, openbao: OpenBao
) -> None:
    stray = entity(openbao, unique("mallory"))
    writers = group(openbao, unique("opsgate-writers"), [stray])
    service = world.service(vault_groups=lambda: {unique("opsgate-gone"): False, writers: False})

    assert service.drift_check() == [f"vault:{writers}/{stray}"]


def test_without_vault_the_vault_drift_check_does_nothing_and_says_nothing(
    tmp_path: Path, database_url: str, kube: FakeKubernetes, caplog: pytest.LogCaptureFixture
) -> None:
    no_vault = make_world(tmp_path, database_url, kube)
    try:
        service = no_vault.service(vault_groups=lambda: {"opsgate-readers": False})
        with caplog.at_level(logging.WARNING, logger="approvals.vault_drift"):
            assert service.drift_check() == []
        assert caplog.records == []
    finally:
        no_vault.backend.close()
        no_vault.engine.dispose()


def test_the_vault_drift_check_reads_the_grants_once_for_all_groups_and_members(
    world: GrantWorld, openbao: OpenBao
) -> None:
    names = [unique("dev") for _ in range(24)]
    ids = [entity(openbao, name) for name in names]
    groups = [group(openbao, unique("opsgate-team"), ids[i::3]) for i in range(3)]
    kept = world.grant(role="edit", settings=rule_for(names[0], groups[0]))
    check = VaultDriftCheck(
        sessions=world.sessions,
        access=world.access,
        clock=world.clock,
        groups=lambda: dict.fromkeys(groups, False),
        notify=lambda view, what: world.notifier.grant_changed(view, event=what),
    )
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(world.engine, "before_cursor_execute", before)
    try:
        removed = check.run()
    finally:
        event.remove(world.engine, "before_cursor_execute", before)

    assert len(removed) == 23
    assert [members(openbao, g) for g in groups] == [[ids[0]], [], []]
    assert world.row(kept.id).status == "active"
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # one read of the grants, one of the requests being executed: not one per member or group
    tables = [("FROM grants" in s, "FROM requests" in s) for s in reads]
    assert [t for t in tables if any(t)] == [
        (True, False),
        (False, True),
    ], reads
    assert len(drift_events(world)) == 23
    assert len([v for v in world.notifier.views if v.status == "drift"]) == 23


# --- the policy's marking ------------------------------------------------------------------------


ACCESS_RULES = """\
  - name: prod access
    match: {action: access, environment: prod}
    approvers: [sre]
    roles: [view, admin]
    vault_groups:
      view: opsgate-view
      admin: {group: shared-admins, members_managed_elsewhere: true}
  - name: staging access
    match: {action: access, environment: staging}
    approvers: [sre]
    vault_groups: {edit: {group: opsgate-edit}}
"""


def test_vault_groups_accept_a_name_or_a_group_with_its_marking() -> None:
    loaded = parse_policy(policy(ACCESS_RULES))

    assert policy_vault_groups(loaded.policy) == {
        "opsgate-view": False,
        "shared-admins": True,
        "opsgate-edit": False,
    }
    # what the kind reads back is still role -> group name
    settings = rule_settings(loaded.policy, loaded.policy.rules[0])
    assert settings["vault_groups"] == {"view": "opsgate-view", "admin": "shared-admins"}


@pytest.mark.parametrize(
    ("groups", "where", "words"),
    [
        pytest.param(
            "{view: {group: opsgate-view, managed: true}}",
            "rules[0].vault_groups.view",
            "managed",
            id="unknown-key",
        ),
        pytest.param(
            "{view: {members_managed_elsewhere: true}}",
            "rules[0].vault_groups.view",
            "group",
            id="no-group-name",
        ),
        pytest.param(
            "{view: [opsgate-a, opsgate-b]}",
            "rules[0].vault_groups.view",
            "a Vault group is a name (opsgate-readers) or {group: NAME, members_managed_elsewhere",
            id="not-a-name",
        ),
        pytest.param(
            "{view: opsgate-x, admin: {group: opsgate-x, members_managed_elsewhere: true}}",
            "rules[0].vault_groups",
            "marked members_managed_elsewhere for one role and not for another",
            id="marked-two-ways",
        ),
    ],
)
def test_a_bad_vault_group_entry_is_refused_naming_it(groups: str, where: str, words: str) -> None:
    rules = (
        "  - match: {action: access}\n"
        "    approvers: [sre]\n"
        "    roles: [view, admin]\n"
        f"    vault_groups: {groups}\n"
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(policy(rules))
    assert where in str(info.value)
    assert words in str(info.value)
