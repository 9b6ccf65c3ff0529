"""Vault drift end to end: the bot, started on a policy whose access rule names a dedicated
``opsgate-*`` group and a group managed elsewhere, removes the stray member of the first at its
start's drift check, reports it in the audit channel (real Slack HTTP to the fake), audits it,
and leaves the second alone. Real OpenBao, the fake cluster, the test database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from approvals.models import AuditEvent
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, cluster_role
from tests.fakes.openbao import OpenBao
from tests.helpers.access import serve_access_bot
from tests.helpers.bot import wait_for
from tests.helpers.policy import policy

pytest_plugins = ["tests.helpers.vault"]

SUFFIX = uuid.uuid4().hex[:8]
DEDICATED = f"opsgate-e2e-drift-{SUFFIX}"
SHARED = f"shared-e2e-admins-{SUFFIX}"


@pytest.fixture
def policy_text() -> str:
    return policy(
        f"""\
  - name: payments access, with Vault
    match: {{action: access, environment: prod, namespace: payments}}
    approvers: [sre]
    roles: [view, edit]
    max_duration: 1h
    vault_groups:
      view: {DEDICATED}
      edit: {{group: {SHARED}, members_managed_elsewhere: true}}
""",
        settings={"incident_channels": None},
        groups={"security": None},
        environments={"staging": None, "sandbox": None},
    )


@pytest.fixture
def vault_settings(settings: Settings, openbao: OpenBao) -> Settings:
    return settings.model_copy(
        update={"vault_addr": openbao.url, "vault_token": SecretStr(openbao.root_token)}
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Engine]:
    engine = create_engine(settings.database_url)
    yield engine
    engine.dispose()


def test_a_stray_member_is_removed_at_start_and_reported_to_the_audit_channel(
    vault_settings: Settings,
    fake_slack: slack.FakeSlack,
    kube: FakeKubernetes,
    db: Engine,
    openbao: OpenBao,
) -> None:
    for name in ("view", "edit"):
        kube.add(cluster_role(name))
    identity = openbao.client().secrets.identity
    mallory = identity.create_or_update_entity_by_name(name=f"mallory-{SUFFIX}")["data"]["id"]
    carol = identity.create_or_update_entity_by_name(name=f"carol-{SUFFIX}")["data"]["id"]
    identity.create_or_update_group_by_name(
        name=DEDICATED, group_type="internal", member_entity_ids=[mallory]
    )
    identity.create_or_update_group_by_name(
        name=SHARED, group_type="internal", member_entity_ids=[carol]
    )

    def group_members(name: str) -> list[str]:
        return list(identity.read_group_by_name(name=name)["data"].get("member_entity_ids") or [])

    with serve_access_bot(vault_settings, fake_slack, kube, db, sweep_interval=3600) as bot:
        wait_for(lambda: group_members(DEDICATED) == [], what="the Vault drift check")
        [report] = wait_for(
            lambda: [c for c in bot.posts_to("C0AUDIT") if "Vault entity" in c.args["text"]],
            what="the Vault drift report in the audit channel",
        )
        assert report.args["text"] == (
            f"[audit] :warning: Drift: Vault entity {mallory} was removed from identity group "
            f"{DEDICATED} (drift: no active grant accounts for this member)."
        )
        with Session(db) as session:
            [event] = session.scalars(
                select(AuditEvent).where(
                    AuditEvent.event == "drift_removed", AuditEvent.target.like("Vault group %")
                )
            ).all()
        assert event.request_id is None
        assert event.detail["vault_group"] == DEDICATED
        assert event.detail["vault_entity_id"] == mallory
        assert group_members(SHARED) == [carol]  # managed elsewhere: never touched
