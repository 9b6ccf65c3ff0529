"""Issue 4 with real processes: ``opsgate serve`` killed while a grant is active and started again
after the grant's end; and two bots on one PostgreSQL database.

Each bot is a real ``opsgate serve`` subprocess (as in ``tests/test_serve.py``) that reaches the
fake Kubernetes API (``KUBECONFIG``), the fake Slack Web API (``SLACK_API_URL``) and a real OpenBao
dev server (``VAULT_ADDR``/``VAULT_TOKEN``) over real HTTP. Time here is real: a process cannot be
handed the test's clock.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from approvals.models import AuditEvent, Grant, Request
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, cluster_role, write_kubeconfig
from tests.fakes.openbao import OpenBao, stop_process
from tests.helpers.bot import buttons, wait_for
from tests.helpers.grants import binding_deletes
from tests.helpers.policy import policy
from tests.helpers.serve import OPSGATE, env_for, free_port

pytest_plugins = ["tests.helpers.vault"]

RB_API = "rbac.authorization.k8s.io/v1"


def policy_text(entity: str, group: str) -> str:
    return policy(
        f"""\
  - name: payments access, with Vault
    match: {{action: access, environment: prod, namespace: payments}}
    approvers: [sre]
    roles: [edit]
    max_duration: 1m
    vault_groups: {{edit: {group}}}
  - name: checkout access
    match: {{action: access, environment: prod, namespace: checkout}}
    approvers: [sre]
    roles: [view]
    max_duration: 1m
""",
        settings={"incident_channels": None},
        groups={"security": None},
        identities={
            "U0DEV1": f"{{kubernetes_user: alice@example.com, vault_entity: {entity}}}",
            "U0DEV2": "{kubernetes_user: bob@example.com}",
        },
        environments={"staging": None, "sandbox": None},
    )


class Bot:
    """One ``opsgate serve`` process; ``kill()`` is SIGKILL (no shutdown code runs)."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log: IO[str] = log.open("w")
        self.proc = subprocess.Popen(
            [OPSGATE, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_up(self) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=60, what=f"opsgate serve on port {self.port} to answer /healthz")

    def post(self, body: str) -> None:
        answer = httpx.post(
            f"{self.url}/slack/events", content=body, headers=slack.signed_headers(body), timeout=10
        )
        assert answer.status_code == 200, answer.text

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)
        self._log.close()


class World:
    """The fakes, the database and the environment the bot processes share."""

    def __init__(
        self,
        tmp_path: Path,
        database_url: str,
        fake: slack.FakeSlack,
        kube: FakeKubernetes,
        openbao: OpenBao,
        policy: Path,
        **extra_env: str,
    ) -> None:
        self.tmp_path = tmp_path
        self.fake = fake
        self.kube = kube
        self.db: Engine = create_engine(database_url)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"prod": kube})
        self.env = env_for(
            tmp_path,
            database_url,
            policy,
            SLACK_API_URL=fake.api_url,
            KUBECONFIG=str(kubeconfig),
            VAULT_ADDR=openbao.url,
            VAULT_TOKEN=openbao.root_token,
            **extra_env,
        )
        self.bots: list[Bot] = []

    def start_bot(self) -> Bot:
        bot = Bot(self.env, self.tmp_path, self.tmp_path / f"serve-{len(self.bots)}.log")
        self.bots.append(bot)
        bot.wait_up()
        return bot

    def close(self) -> None:
        for bot in self.bots:
            bot.stop()
        self.db.dispose()

    # --- Slack ------------------------------------------------------------------------------

    def approvals(self) -> list[slack.Call]:
        return [
            c
            for c in self.fake.calls_of("chat.postMessage")
            if c.args.get("channel") == "C0APPROVALS" and "approve" in buttons(c)
        ]

    def request_access(self, bot: Bot, text: str, *, approver: str = "U0SRE1") -> int:
        """``/ops <text>`` from U0DEV1 to ``bot``, approved there; returns the grant ID."""
        before = len(self.approvals())
        bot.post(
            slack.slash_command_body(text, user_id="U0DEV1", response_url=self.fake.response_url())
        )
        message = wait_for(lambda: self.approvals()[before:], what=f"approval of /ops {text}")[0]
        request_id = int(buttons(message)["approve"])
        bot.post(
            slack.block_action_body(
                "approve",
                str(request_id),
                user_id=approver,
                channel_id="C0APPROVALS",
                message_ts=message.response["ts"],
                response_url=self.fake.response_url(),
            )
        )
        return request_id

    def dm_saying(self, user: str, words: str, *more: str) -> slack.Call:
        """The first direct message to ``user`` that says ``words`` and each of ``more``."""
        found: slack.Call = wait_for(
            lambda: next(
                (
                    c
                    for c in self.fake.calls_of("chat.postMessage")
                    if c.args.get("channel") == user
                    and all(w in c.args.get("text", "") for w in (words, *more))
                ),
                None,
            ),
            what=f"a message to {user} saying {words!r}",
        )
        return found

    # --- the cluster and the database -------------------------------------------------------

    def binding(self, grant_id: int, namespace: str) -> dict[str, Any] | None:
        return self.kube.get_object(RB_API, "RoleBinding", namespace, f"opsgate-grant-{grant_id}")

    def grant(self, grant_id: int) -> Grant | None:
        with Session(self.db) as session:
            return session.get(Grant, grant_id)

    def status(self, request_id: int) -> str | None:
        with Session(self.db) as session:
            request = session.get(Request, request_id)
            return request.status if request is not None else None

    def audit(self, request_id: int) -> list[AuditEvent]:
        with Session(self.db) as session:
            return list(
                session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.request_id == request_id)
                    .order_by(AuditEvent.id)
                )
            )


@pytest.fixture
def vault_identity(openbao: OpenBao) -> tuple[str, str, str]:
    """A fresh identity entity and an internal ``opsgate-*`` group: (entity, its ID, group)."""
    client = openbao.client()
    suffix = uuid.uuid4().hex[:8]
    entity, group = f"alice-{suffix}", f"opsgate-e2e-edit-{suffix}"
    entity_id = client.secrets.identity.create_or_update_entity_by_name(name=entity)["data"]["id"]
    client.secrets.identity.create_or_update_group_by_name(name=group, group_type="internal")
    return entity, entity_id, group


def group_members(openbao: OpenBao, group: str) -> list[str]:
    data = openbao.client().secrets.identity.read_group_by_name(name=group)["data"]
    return list(data.get("member_entity_ids") or [])


def make_world(
    tmp_path: Path,
    database_url: str,
    fake: slack.FakeSlack,
    kube: FakeKubernetes,
    openbao: OpenBao,
    vault_identity: tuple[str, str, str],
    *,
    sweep_interval: str,
) -> World:
    """A World whose cluster has the ClusterRoles ``view`` and ``edit`` and whose policy names
    ``vault_identity``'s entity and group; its bots sweep every ``sweep_interval`` seconds."""
    for name in ("view", "edit"):
        kube.add(cluster_role(name))
    entity, _, group = vault_identity
    policy = tmp_path / "policy.yml"
    policy.write_text(policy_text(entity, group))
    return World(
        tmp_path,
        database_url,
        fake,
        kube,
        openbao,
        policy,
        OPSGATE_SWEEP_INTERVAL=sweep_interval,
    )


@pytest.fixture
def world(
    tmp_path: Path,
    database_url: str,
    fake_slack: slack.FakeSlack,
    kube: FakeKubernetes,
    openbao: OpenBao,
    vault_identity: tuple[str, str, str],
) -> Iterator[World]:
    # No periodic sweep within a test: what revokes is the start of a bot (or a grant's job).
    built = make_world(
        tmp_path, database_url, fake_slack, kube, openbao, vault_identity, sweep_interval="3600"
    )
    try:
        yield built
    finally:
        built.close()


def test_a_bot_killed_during_a_grant_revokes_it_when_it_starts_again(
    world: World, openbao: OpenBao, vault_identity: tuple[str, str, str]
) -> None:
    _, entity_id, group = vault_identity
    first = world.start_bot()
    grant_id = world.request_access(first, "access payments --role edit --for 4s --reason crash")
    wait_for(lambda: world.status(grant_id) == "active", what="the grant to start")
    first.kill()  # SIGKILL: no shutdown, the grant's expiry job stays in the database

    grant = world.grant(grant_id)
    assert grant is not None
    expires_at = grant.expires_at
    assert world.binding(grant_id, "payments") is not None
    assert group_members(openbao, group) == [entity_id]

    # the grant ends while no bot runs: nothing removes it
    time.sleep(max(expires_at.timestamp() - time.time(), 0) + 1.5)
    assert world.status(grant_id) == "active"
    assert world.binding(grant_id, "payments") is not None
    assert group_members(openbao, group) == [entity_id]

    restarted_at = datetime.now(UTC)
    world.start_bot()
    wait_for(
        lambda: world.binding(grant_id, "payments") is None,
        timeout=20,
        what="the restarted bot to delete the RoleBinding",
    )
    wait_for(
        lambda: group_members(openbao, group) == [],
        timeout=20,
        what="the entity to leave the Vault group",
    )
    wait_for(lambda: world.status(grant_id) == "revoked", timeout=20, what="the revocation")

    # the audit trail says when and why
    grant = world.grant(grant_id)
    assert grant is not None
    assert (grant.status, grant.revoke_reason, grant.revoked_by) == (
        "revoked",
        "expired",
        "opsgate",
    )
    assert grant.revoked_at is not None
    assert grant.revoked_at >= restarted_at > expires_at
    [ended] = [e for e in world.audit(grant_id) if e.to_status == "revoked"]
    assert (ended.event, ended.from_status, ended.actor_id) == (
        "grant_expired",
        "active",
        "opsgate",
    )
    assert ended.created_at == grant.revoked_at
    assert ended.detail["why"] == "expired"
    assert ended.detail["reason"] == "expired"
    assert ended.detail["expires_at"] == expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert datetime.fromisoformat(ended.detail["revoked_at"]) == grant.revoked_at
    lag = (grant.revoked_at - expires_at).total_seconds()
    assert ended.detail["lag_seconds"] == round(lag, 3)
    assert lag >= (restarted_at - expires_at).total_seconds()  # late by the time it was down
    assert ended.detail["removed"] == {"role_binding_deleted": True, "vault_member_removed": True}
    # and the grantee is told, by the new process
    world.dm_saying("U0DEV1", f"Grant #{grant_id}: access: edit in payments (prod)", "has expired")


def test_two_bots_on_one_postgresql_revoke_each_grant_exactly_once(
    tmp_path: Path,
    database_url: str,
    fake_slack: slack.FakeSlack,
    kube: FakeKubernetes,
    openbao: OpenBao,
    vault_identity: tuple[str, str, str],
) -> None:
    """Two ``opsgate serve`` processes sweeping every 0.2 s; several grants end together."""
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("needs PostgreSQL (OPSGATE_TEST_DATABASE_URL): SQLite serializes writers")
    world = make_world(
        tmp_path, database_url, fake_slack, kube, openbao, vault_identity, sweep_interval="0.2"
    )
    try:
        first = world.start_bot()
        second = world.start_bot()
        ids = [
            world.request_access(bot, "access checkout --for 6s")
            for bot in (first, second, first, second, first, second)
        ]

        def all_revoked() -> bool:
            return all(world.status(g) == "revoked" for g in ids)

        wait_for(all_revoked, timeout=40, what="every grant to be revoked")
        created = [
            r.body["metadata"]["name"]
            for r in world.kube.requests_matching(method="POST", path_contains="/rolebindings")
            if isinstance(r.body, dict)
        ]
        assert sorted(created) == sorted(f"opsgate-grant-{g}" for g in ids)
        assert all(world.binding(g, "checkout") is None for g in ids)
        for grant_id in ids:
            deletes = binding_deletes(world.kube, "checkout", grant_id)
            assert deletes == 1, f"grant #{grant_id}: {deletes} DELETEs"
        with Session(world.db) as session:
            ends = session.execute(
                select(AuditEvent.request_id, AuditEvent.event, func.count())
                .where(AuditEvent.to_status == "revoked")
                .group_by(AuditEvent.request_id, AuditEvent.event)
            ).all()
        assert sorted(ends) == [(g, "grant_expired", 1) for g in ids]
        for grant_id in ids:
            world.dm_saying(
                "U0DEV1", f"Grant #{grant_id}: access: view in checkout (prod)", "has expired"
            )

        # Both schedulers are still alive: APScheduler 3 on a job table shared by two schedulers
        # raises JobLookupError in its own thread when the other removed a job first, which
        # silently ends every sweep, reminder and drift check of that process.
        for bot in (first, second):
            assert "Exception in thread APScheduler" not in bot.log_path.read_text()
        # and either one alone keeps revoking on time: the other dies, a new grant still ends
        first.kill()
        last = world.request_access(second, "access checkout --for 2s")
        wait_for(lambda: world.status(last) == "active", what="the last grant to start")
        wait_for(
            lambda: world.status(last) == "revoked",
            timeout=20,
            what="the surviving bot to revoke the last grant",
        )
        assert world.binding(last, "checkout") is None
    finally:
        world.close()
