"""End to end for issue 5 (Vault secret rotation): signed Slack requests into the bot on a real
socket, a real OpenBao dev server (one for the session, each test on its own secret path), the
fake Kubernetes API (with its Deployment controller) and the fake Slack Web API over real HTTP.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import string
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import MetaData, Table, create_engine, inspect, select

from actions.backends.vault import SEALED_MESSAGE
from approvals.models import AuditEvent, Request
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, deployment, write_kubeconfig
from tests.fakes.openbao import OpenBao
from tests.fakes.postgres import OwnPostgres
from tests.helpers.bot import RunningBot, running_bot, wait_for
from tests.helpers.policy import policy

pytest_plugins = ["tests.helpers.vault"]

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
PASSWORD_POLICY = "opsgate-e2e"
PASSWORD_POLICY_LENGTH = 40

POLICY = policy(
    f"""\
  - name: prod secrets need two from security
    match: {{action: rotate, path: "secret/prod/*"}}
    approvers: [security]
    min_approvals: 2
    rotate:
      password_policy: {PASSWORD_POLICY}
      key: password
      restart: [deployment/payments-api]
      namespace: payments
  - name: team secrets
    match: {{action: rotate, path: "secret/team/*"}}
    approvers: [security]
    rotate:
      generator: {{length: 48}}
  - name: database static roles
    match: {{action: rotate, path: "database-*/static-roles/*"}}
    approvers: [security]
""",
    settings={"incident_channels": None},
    groups={"security": "{users: [U0SEC1, U0SEC2, U0SEC3]}"},
    environments={"sandbox": None},
)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def password_policy(openbao: OpenBao) -> str:
    """A Vault password policy: 40 characters, letters and digits, at least one of each kind."""
    hcl = f"length = {PASSWORD_POLICY_LENGTH}\n" + "".join(
        f'rule "charset" {{\n  charset = "{chars}"\n  min-chars = 1\n}}\n'
        for chars in (string.ascii_lowercase, string.ascii_uppercase, string.digits)
    )
    openbao.client().write_data(f"sys/policies/password/{PASSWORD_POLICY}", data={"policy": hcl})
    return PASSWORD_POLICY


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def settings(settings: Settings, openbao: OpenBao, password_policy: str) -> Settings:
    """conftest's settings (this module's policy), with Vault: the bot builds its VaultBackend."""
    return settings.model_copy(
        update={"vault_addr": openbao.url, "vault_token": SecretStr(openbao.root_token)}
    )


# --- helpers --------------------------------------------------------------------------------------


def new_secret(openbao: OpenBao, area: str, data: dict[str, str]) -> tuple[str, str]:
    """Write ``data`` as version 1 of a fresh secret under ``secret/<area>/``; returns
    (full path, path inside the mount)."""
    inside = f"{area}/{uuid.uuid4().hex[:10]}/db"
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=inside, secret=data, mount_point="secret"
    )
    return f"secret/{inside}", inside


def write(openbao: OpenBao, inside: str, data: dict[str, str]) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=inside, secret=data, mount_point="secret"
    )


def read(openbao: OpenBao, inside: str, version: int | None = None) -> dict[str, str]:
    data: dict[str, str] = openbao.client().secrets.kv.v2.read_secret_version(
        path=inside, version=version, mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    return data


def current_version(openbao: OpenBao, inside: str) -> int:
    meta = openbao.client().secrets.kv.v2.read_secret_metadata(path=inside, mount_point="secret")
    return int(meta["data"]["current_version"])


def rows(settings: Settings, model: type[Any]) -> list[Any]:
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(model.__table__).order_by(model.id)))
    finally:
        engine.dispose()


def request_row(settings: Settings, request_id: int = 1) -> Any:
    return next(r for r in rows(settings, Request) if r.id == request_id)


def wait_status(settings: Settings, status: str, request_id: int = 1) -> Any:
    """Wait until request ``request_id`` is ``status``; fail at once on another final status."""

    def reached() -> Any:
        row = request_row(settings, request_id)
        final = {"succeeded", "failed", "denied", "cancelled", "expired"}
        if row.status in final and row.status != status:
            pytest.fail(f"request #{request_id} is {row.status}: {row.error or row.result}")
        return row if row.status == status else None

    return wait_for(reached, timeout=30, what=f"request #{request_id} to be {status}")


def submit(bot: RunningBot, text: str, *, user: str = "U0DEV1") -> str:
    answer, response_url = bot.command(text, user=user)
    assert answer.status_code == 200, answer.text
    assert "Usage" not in answer.json().get("text", ""), answer.json()
    return response_url


def answer_to(bot: RunningBot, response_url: str) -> str:
    """The text the bot sent to the requester alone through ``response_url``."""
    route = "/" + response_url.split("/", 3)[3]
    [answer] = wait_for(
        lambda: [c.args.get("text", "") for c in bot.fake_slack.calls if c.path == route],
        what="the answer to the requester",
    )
    return str(answer)


def approval_message(bot: RunningBot) -> slack.Call:
    posted: list[slack.Call] = wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")],
        what="the approval message",
    )
    return posted[-1]


def thread_texts(fake: slack.FakeSlack) -> list[str]:
    """Replies in the thread under the requester's message (in C0DEV)."""
    return [
        c.args["text"]
        for c in fake.calls_of("chat.postMessage")
        if c.args.get("thread_ts") and c.args.get("channel") == "C0DEV"
    ]


def wait_thread(fake: slack.FakeSlack, needle: str) -> str:
    return str(
        wait_for(
            lambda: [t for t in thread_texts(fake) if needle in t],
            what=f"a thread reply with {needle!r}",
        )[-1]
    )


def restarted_at(kube: FakeKubernetes, name: str, namespace: str = "payments") -> str | None:
    obj = kube.get_object("apps/v1", "Deployment", namespace, name)
    assert obj is not None
    annotations = obj["spec"]["template"].get("metadata", {}).get("annotations") or {}
    return annotations.get(RESTARTED_AT)


def workload_patches(kube: FakeKubernetes) -> list[Any]:
    """The PATCHes that changed a workload (the previews' server-side dry runs change nothing)."""
    return [r for r in kube.requests_matching(method="PATCH") if "dryRun" not in r.query]


def approve_by_two(bot: RunningBot) -> None:
    """U0SEC1 then U0SEC2 approve request #1; the first alone executes nothing."""
    assert bot.click("approve", "1", user="U0SEC1").status_code == 200
    wait_for(
        lambda: "(1/2)" in json.dumps([c.args for c in bot.fake_slack.calls_of("chat.update")]),
        what="the approval message to show 1/2",
    )
    assert bot.click("approve", "1", user="U0SEC2").status_code == 200


def database_dump(settings: Settings) -> str:
    """Every row of every table (all columns), as text: ``SELECT *`` of each table that
    SQLAlchemy's inspector lists (binary columns decoded byte for byte)."""
    engine = create_engine(settings.database_url)
    try:
        names = inspect(engine).get_table_names()
        assert {"requests", "audit_events", "approvals", "grants"} <= set(names), names
        parts: list[str] = []
        with engine.connect() as conn:
            for name in names:
                table = Table(name, MetaData(), autoload_with=engine)
                for row in conn.execute(select(table)):
                    cells = [
                        bytes(v).decode("latin-1") if isinstance(v, bytes | memoryview) else v
                        for v in row
                    ]
                    parts.append(f"{name}: " + json.dumps(cells, default=str))
        return "\n".join(parts)
    finally:
        engine.dispose()


@pytest.fixture
def answers(bot: RunningBot, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The bot's own HTTP answers to the signed requests (slash commands, clicks) of the test."""
    said: list[str] = []
    post = bot.post

    def recording(body: str, headers: dict[str, str] | None = None) -> httpx.Response:
        response = post(body, headers)
        said.append(response.text)
        return response

    monkeypatch.setattr(bot, "post", recording)
    return said


def everything_written(
    bot: RunningBot,
    settings: Settings,
    kube: FakeKubernetes,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    answers: list[str],
) -> dict[str, str]:
    """Everything the bot wrote, by place: every Slack Web API call and response_url body the
    fake recorded, the bot's HTTP answers to Slack, the log records (message, arguments,
    exception), what reached stdout and stderr, every row of every database table (audit events
    and the scheduler's jobs among them), and every request body sent to Kubernetes."""
    out, err = capfd.readouterr()
    return {
        "Slack": bot.fake_slack.all_text(),
        "the answers to Slack": "\n".join(answers),
        "the logs": caplog.text
        + "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records),
        "stdout and stderr": out + err,
        "the database": database_dump(settings),
        "Kubernetes": json.dumps([(r.path, r.query, r.body) for r in kube.requests_matching()]),
    }


def assert_nowhere(written: dict[str, str], values: dict[str, str]) -> None:
    """Fail, naming the value and the place but never printing the value, if any is written."""
    for name, value in values.items():
        assert len(value) >= 12, name  # long enough not to be found by chance
        for where, text in written.items():
            if value in text:  # not `assert value not in text`: that would print the value
                pytest.fail(f"the {name} is in {where}")


# --- KV rotation ----------------------------------------------------------------------------------


def test_two_security_approvers_rotate_a_prod_secret_and_its_consumer_rolls_out(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, openbao: OpenBao
) -> None:
    old = {"username": "payments", "password": "old-" + secrets.token_hex(12)}
    path, inside = new_secret(openbao, "prod", old)

    submit(bot, f'rotate {path} --reason "quarterly rotation"')
    approval = approval_message(bot)
    assert approval.args["channel"] == "C0APPROVALS"
    shown = json.dumps(approval.args["blocks"])
    assert re.search(
        r"Current version: 1, created \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ s ago\)", shown
    ), shown
    for fact in (
        path,
        "Keys: password, username",
        "Current version: 1",
        f"New value for key *password*: Vault password policy `{PASSWORD_POLICY}`",
        "written as version 2 with check-and-set on version 1",
        "in namespace *payments*: deployment/payments-api",
        "quarterly rotation",
    ):
        assert fact in shown, fact

    # one approval of two: nothing happens
    assert bot.click("approve", "1", user="U0SEC1").status_code == 200
    wait_thread(bot.fake_slack, "<@U0SEC1> approved request #1 (1/2)")
    assert request_row(settings).status == "pending"
    assert current_version(openbao, inside) == 1
    assert workload_patches(kube) == []
    # an SRE is not in security: refused, nothing changes
    assert bot.click("approve", "1", user="U0SRE1").status_code == 200
    [refused] = wait_for(
        lambda: [
            c.args["text"]
            for c in bot.fake_slack.calls_of("chat.postEphemeral")
            if c.args["user"] == "U0SRE1"
        ]
    )
    assert "security" in refused
    assert request_row(settings).status == "pending"

    assert bot.click("approve", "1", user="U0SEC2").status_code == 200
    done = wait_status(settings, "succeeded")

    # Vault: version 2, the password from the password policy, the other key kept
    assert current_version(openbao, inside) == 2
    new = read(openbao, inside)
    assert new["username"] == "payments"
    assert new["password"] != old["password"]
    assert len(new["password"]) == PASSWORD_POLICY_LENGTH
    assert set(new["password"]) <= set(string.ascii_letters + string.digits)
    assert read(openbao, inside, version=1) == old

    # the consumer was restarted as kubectl does, and its rollout completed
    stamp = restarted_at(kube, "payments-api")
    assert stamp is not None
    assert stamp.endswith("Z")
    [patch] = workload_patches(kube)
    assert patch.path.endswith("/namespaces/payments/deployments/payments-api")
    deployment_now = kube.get_object("apps/v1", "Deployment", "payments", "payments-api")
    assert deployment_now is not None
    assert (
        deployment_now["status"]["observedGeneration"] == deployment_now["metadata"]["generation"]
    )
    assert deployment_now["status"]["updatedReplicas"] == 3

    # the thread says what was written and that the rollout finished
    reply = wait_thread(bot.fake_slack, "Done")
    assert f"rotated key password of {path}: new version 2 (was 1)" in reply
    assert "deployment/payments-api" in reply
    assert "rolled out" in reply
    assert "rotated key password" in (done.result or "")
    final = wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.update") if "succeeded" in c.args["text"]]
    )[-1]
    assert final.args["ts"] == approval.response["ts"]
    blocks = json.dumps(final.args["blocks"])
    assert "<@U0SEC1>" in blocks
    assert "<@U0SEC2>" in blocks
    assert '"actions"' not in blocks  # the buttons are gone

    events = rows(settings, AuditEvent)
    assert [e.event for e in events] == [
        "submitted",
        "approval_added",
        "approval_added",
        "approved",
        "executing",
        "succeeded",
    ]
    assert [e.actor_id for e in events[:3]] == ["U0DEV1", "U0SEC1", "U0SEC2"]
    assert events[-1].detail["version"] == 2
    assert events[-1].detail["previous_version"] == 1
    assert events[-1].detail["consumers"][0]["ok"] is True


def test_nothing_the_bot_wrote_holds_the_old_or_the_new_value(
    bot: RunningBot,
    kube: FakeKubernetes,
    settings: Settings,
    openbao: OpenBao,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    answers: list[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    old_password = "old-pw-" + secrets.token_hex(16)
    kept_token = "kept-tok-" + secrets.token_hex(16)  # copied from version 1 to version 2
    path, inside = new_secret(
        openbao, "prod", {"password": old_password, "api_token": kept_token, "username": "svc"}
    )

    submit(bot, f'rotate {path} --reason "leaked in a build log"')
    approval_message(bot)
    approve_by_two(bot)
    wait_status(settings, "succeeded")
    wait_thread(bot.fake_slack, "Done")
    wait_for(
        lambda: [
            c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args["channel"] == "C0AUDIT"
        ]
    )
    new = read(openbao, inside)
    new_password = new["password"]
    assert new_password != old_password
    assert new["api_token"] == kept_token  # it really went through the bot's write

    written = everything_written(bot, settings, kube, caplog, capfd, answers)

    # the search is not vacuous: each place holds the request
    assert path in written["Slack"]
    assert path in written["the database"]
    assert "rolled out" in written["the database"]
    assert "executing" in written["the database"]  # the audit events
    assert caplog.records, "nothing was logged at DEBUG"
    assert "payments-api" in written["Kubernetes"]
    assert len(answers) == 3  # the command and two clicks
    assert_nowhere(
        written,
        {"old password": old_password, "new password": new_password, "kept key": kept_token},
    )


def test_restore_to_version_writes_the_old_data_as_a_new_version(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, openbao: OpenBao
) -> None:
    first = {"password": "v1-" + secrets.token_hex(8), "username": "payments"}
    path, inside = new_secret(openbao, "prod", first)
    write(openbao, inside, {"password": "v2-" + secrets.token_hex(8), "username": "payments"})

    submit(bot, f'restore {path} --to-version 1 --reason "v2 broke the payments-api"')
    approval = approval_message(bot)
    shown = json.dumps(approval.args["blocks"])
    assert f"Restore *{path}* to the data of version 1" in shown
    assert "Current version: 2" in shown
    assert "Written as new version 3 with check-and-set on version 2" in shown
    # restore is decided by the rotate rule: two from security
    assert "security" in shown
    approve_by_two(bot)
    wait_status(settings, "succeeded")

    assert current_version(openbao, inside) == 3
    assert read(openbao, inside) == first
    assert read(openbao, inside, version=2)["password"].startswith("v2-")  # nothing deleted
    assert restarted_at(kube, "payments-api") is not None  # the rule's consumer read it again
    reply = wait_thread(bot.fake_slack, "Done")
    assert f"restored {path} to the data of version 1: new version 3 (was 2)" in reply
    assert request_row(settings).rule is not None


def test_nothing_the_bot_wrote_for_a_restore_holds_a_value(
    bot: RunningBot,
    kube: FakeKubernetes,
    settings: Settings,
    openbao: OpenBao,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    answers: list[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    first = "v1-pw-" + secrets.token_hex(16)
    second = "v2-pw-" + secrets.token_hex(16)
    kept = "kept-tok-" + secrets.token_hex(16)
    path, inside = new_secret(openbao, "prod", {"password": first, "api_token": kept})
    write(openbao, inside, {"password": second, "api_token": kept})

    submit(bot, f'restore {path} --to-version 1 --reason "v2 broke the payments-api"')
    approval_message(bot)
    approve_by_two(bot)
    wait_status(settings, "succeeded")
    wait_thread(bot.fake_slack, "Done")
    wait_for(
        lambda: [
            c
            for c in bot.fake_slack.calls_of("chat.postMessage")
            if c.args["channel"] == "C0AUDIT" and "Done" in c.args["text"]
        ]
    )
    assert read(openbao, inside) == {"password": first, "api_token": kept}  # the bot's write

    written = everything_written(bot, settings, kube, caplog, capfd, answers)
    assert path in written["Slack"]
    assert "restored_version" in written["the database"]  # the audit event of the outcome
    assert caplog.records
    assert "payments-api" in written["Kubernetes"]
    assert len(answers) == 3
    assert_nowhere(
        written,
        {"restored password": first, "replaced password": second, "kept key": kept},
    )


def test_a_write_between_preview_and_approval_fails_the_request_and_overwrites_nothing(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, openbao: OpenBao
) -> None:
    path, inside = new_secret(openbao, "team", {"password": "p1"})
    submit(bot, f"rotate {path} --restart payments-api -n payments")
    approval_message(bot)
    theirs = {"password": "written-by-someone-else"}
    write(openbao, inside, theirs)  # version 2, after the preview read version 1

    bot.click("approve", "1", user="U0SEC1")
    failed = wait_status(settings, "failed")

    expected = f"{path} changed since the preview (version 1 is now 2); nothing was written"
    assert expected in failed.error
    assert current_version(openbao, inside) == 2
    assert read(openbao, inside) == theirs
    assert workload_patches(kube) == []  # no consumer restarted for a write that did not happen
    assert expected in wait_thread(bot.fake_slack, "Failed")
    update = wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.update") if "failed" in c.args["text"]]
    )[-1]
    assert expected in json.dumps(update.args["blocks"])
    events = rows(settings, AuditEvent)
    assert events[-1].event == "failed"
    assert expected in events[-1].detail["error"]


def test_a_typo_in_restart_is_answered_at_once_and_nothing_is_asked_or_written(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, openbao: OpenBao
) -> None:
    path, inside = new_secret(openbao, "team", {"password": "p1"})
    response_url = submit(bot, f"rotate {path} --restart payments-api,typo -n payments")

    answer = answer_to(bot, response_url)
    assert answer.startswith(":warning: cannot restart the secret's consumers afterwards: ")
    assert "no Deployment, StatefulSet or DaemonSet named 'typo' in namespace payments" in answer
    assert "Nothing was written; fix --restart" in answer
    # nobody is asked, nothing is stored, written or restarted
    assert [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")] == []
    assert rows(settings, Request) == []
    assert current_version(openbao, inside) == 1
    assert read(openbao, inside) == {"password": "p1"}
    assert workload_patches(kube) == []


def test_the_approval_message_names_the_consumers_as_resolved(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, openbao: OpenBao
) -> None:
    path, _ = new_secret(openbao, "team", {"password": "p1"})
    submit(bot, f"rotate {path} --restart payments-api -n payments")
    shown = json.dumps(approval_message(bot).args["blocks"])
    assert "in namespace *payments*: deployment/payments-api" in shown
    assert request_row(settings).preview["facts"]["restart"] == ["deployment/payments-api"]


def test_a_sealed_vault_at_approval_fails_the_request_with_the_sealed_message(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, openbao: OpenBao
) -> None:
    path, inside = new_secret(openbao, "team", {"password": "p1"})
    submit(bot, f"rotate {path} --restart payments-api -n payments")
    approval_message(bot)
    openbao.seal()
    try:
        bot.click("approve", "1", user="U0SEC1")
        failed = wait_status(settings, "failed")
    finally:
        openbao.unseal()

    assert failed.error == SEALED_MESSAGE
    assert "Vault is sealed" in wait_thread(bot.fake_slack, "Failed")
    assert current_version(openbao, inside) == 1
    assert read(openbao, inside) == {"password": "p1"}
    assert workload_patches(kube) == []


def test_a_sealed_vault_at_submission_is_told_to_the_requester_and_nothing_is_asked(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, openbao: OpenBao
) -> None:
    path, inside = new_secret(openbao, "team", {"password": "p1"})
    openbao.seal()
    try:
        response_url = submit(bot, f"rotate {path} --restart payments-api -n payments")
        answer = answer_to(bot, response_url)
    finally:
        openbao.unseal()
    assert answer == f":warning: {SEALED_MESSAGE}"
    assert [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")] == []
    assert rows(settings, Request) == []
    assert current_version(openbao, inside) == 1


def test_a_token_without_permission_fails_clearly_through_slack(
    kube: FakeKubernetes, settings: Settings, fake_slack: slack.FakeSlack, openbao: OpenBao
) -> None:
    """opsgate's token may read secret/team/<id>/ (the preview works) but not write it; and it
    may not read another path at all (the request is refused to the requester alone)."""
    path, inside = new_secret(openbao, "team", {"password": "p1"})
    elsewhere, elsewhere_inside = new_secret(openbao, "team", {"password": "p2"})
    token = openbao.token_with_policy(
        f"read-only-{uuid.uuid4().hex[:6]}",
        f'path "secret/data/{inside}" {{ capabilities = ["read"] }}\n'
        f'path "secret/metadata/{inside}" {{ capabilities = ["read"] }}\n',
    )
    read_only = settings.model_copy(update={"vault_token": SecretStr(token)})
    with running_bot(read_only, fake_slack) as bot:
        # not even readable: answered at once, nobody asked
        response_url = submit(bot, f"rotate {elsewhere}")
        assert answer_to(bot, response_url) == (
            ":warning: opsgate's Vault token may not read the metadata of "
            f"secret/metadata/{elsewhere_inside}: permission denied"
        )
        assert [c for c in fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")] == []

        # readable but not writable: the approved request fails, saying why
        submit(bot, f"rotate {path} --restart payments-api -n payments")
        approval_message(bot)
        bot.click("approve", "1", user="U0SEC1")
        failed = wait_status(read_only, "failed")
        expected = f"opsgate's Vault token may not write to secret/data/{inside}: permission denied"
        assert failed.error == expected
        assert expected in wait_thread(fake_slack, "Failed")
        update = wait_for(
            lambda: [c for c in fake_slack.calls_of("chat.update") if "failed" in c.args["text"]]
        )[-1]
        assert expected in json.dumps(update.args["blocks"])
    assert current_version(openbao, inside) == 1
    assert read(openbao, inside) == {"password": "p1"}
    assert workload_patches(kube) == []  # nothing written: no consumer restarted


@pytest.mark.parametrize("fault", ["stalled", "deleted"])
def test_a_consumer_that_does_not_come_back_fails_the_request_and_offers_the_restore(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, openbao: OpenBao, fault: str
) -> None:
    kube.add(deployment("ledger", "payments", replicas=2, image="ledger:3"))
    path, inside = new_secret(openbao, "team", {"password": "p1"})
    submit(bot, f"rotate {path} --restart payments-api,ledger -n payments")
    approval_message(bot)
    if fault == "stalled":
        kube.stall("payments", "ledger")
    else:  # deleted between the preview and the approval
        kube.store.delete(kube.resource_type("apps/v1", "Deployment"), "payments", "ledger")

    bot.click("approve", "1", user="U0SEC1")
    failed = wait_status(settings, "failed")

    error = failed.error
    assert f"rotated key password of {path}: new version 2 (was 1)" in error
    assert "but 1 of 2 workload restart(s) failed" in error
    assert "ledger: FAILED" in error
    assert ("ProgressDeadlineExceeded" if fault == "stalled" else "ledger") in error
    assert "The new value stays in place" in error
    restore = f"`/ops restore {path} --to-version 1`"
    assert restore in error
    assert "`/ops restart deployment/ledger -n payments`" in error
    # the write did succeed, and the other consumer was restarted
    assert current_version(openbao, inside) == 2
    assert read(openbao, inside)["password"] != "p1"
    assert restarted_at(kube, "payments-api") is not None
    # every message Slack shows about the failure offers the restore: the requester's thread,
    # the approval message (as updated) and the audit channel
    reply = wait_thread(bot.fake_slack, "Failed")
    assert restore in reply
    assert "new version 2" in reply
    [update] = [c for c in bot.fake_slack.calls_of("chat.update") if "failed" in c.args["text"]]
    assert update.args["ts"] == bot.approval_ts()
    assert restore in update.args["blocks"][-1]["text"]["text"]
    audit = wait_for(
        lambda: [
            c.args["text"]
            for c in bot.fake_slack.calls_of("chat.postMessage")
            if c.args["channel"] == "C0AUDIT" and "Failed" in c.args["text"]
        ]
    )[-1]
    assert restore in audit


def test_the_rule_generator_makes_the_value(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, openbao: OpenBao
) -> None:
    path, inside = new_secret(openbao, "team", {"token": "t1", "user": "u"})
    submit(bot, f"rotate {path} --key token")
    shown = json.dumps(approval_message(bot).args["blocks"])
    assert "48 random characters from a 62-character set" in shown
    assert "No workloads will be restarted" in shown
    bot.click("approve", "1", user="U0SEC1")
    wait_status(settings, "succeeded")
    new = read(openbao, inside)
    assert new["user"] == "u"
    assert len(new["token"]) == 48
    assert set(new["token"]) <= set(string.ascii_letters + string.digits)
    # drawn from all 62 letters and digits, not from the letters of the word "alphanumeric"
    assert not set(new["token"]) <= set("alphanumeric")
    assert workload_patches(kube) == []


def test_consumers_of_a_restore_restart_in_their_environment_cluster(
    tmp_path: Path,
    kube: FakeKubernetes,
    settings: Settings,
    fake_slack: slack.FakeSlack,
    openbao: OpenBao,
) -> None:
    """The kubeconfig's current context is another (empty) cluster: the rule's consumer, in
    namespace payments, must still be restarted in prod's cluster."""
    elsewhere = FakeKubernetes().start()
    try:
        kubeconfig = write_kubeconfig(
            tmp_path / "kubeconfig-elsewhere",
            {"elsewhere": elsewhere, "prod": kube, "staging": kube},
            current="elsewhere",
        )
        with running_bot(
            settings.model_copy(update={"kubeconfig": str(kubeconfig)}), fake_slack
        ) as bot:
            path, inside = new_secret(openbao, "prod", {"password": "a"})
            write(openbao, inside, {"password": "b"})
            submit(bot, f"restore {path} --to-version 1")
            approval_message(bot)
            approve_by_two(bot)
            row = wait_for(
                lambda: (r := request_row(settings)).status in ("succeeded", "failed") and r,
                what="the restore to finish",
            )
        assert row.status == "succeeded", row.error
        assert restarted_at(kube, "payments-api") is not None
        assert elsewhere.requests_matching(method="PATCH") == []
    finally:
        elsewhere.stop()


# --- database static role -------------------------------------------------------------------------


def test_a_database_static_role_is_rotated_through_slack(
    bot: RunningBot,
    kube: FakeKubernetes,
    settings: Settings,
    openbao: OpenBao,
    own_postgres: OwnPostgres,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    answers: list[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    client = openbao.client()
    suffix = uuid.uuid4().hex[:6]
    mount, user, role = f"database-{suffix}", f"app_{suffix}", f"app-{suffix}"
    own_postgres.execute(f"CREATE ROLE {user} LOGIN PASSWORD 'set-by-the-dba'")
    client.sys.enable_secrets_engine("database", path=mount)
    client.write_data(
        f"{mount}/config/pg",
        data={
            "plugin_name": "postgresql-database-plugin",
            "connection_url": (
                f"postgresql://{{{{username}}}}:{{{{password}}}}@{own_postgres.host}:"
                f"{own_postgres.port}/postgres?sslmode=disable"
            ),
            "username": own_postgres.superuser,
            "password": own_postgres.superuser_password,
            "allowed_roles": [role],
            "password_authentication": "scram-sha-256",
        },
    )
    client.write_data(
        f"{mount}/static-roles/{role}",
        data={"db_name": "pg", "username": user, "rotation_period": "24h"},
    )
    old = client.read(f"{mount}/static-creds/{role}")["data"]["password"]  # test side only
    assert own_postgres.can_login(user, old)

    path = f"{mount}/static-roles/{role}"
    submit(bot, f"rotate {path} --restart payments-api -n payments")
    shown = json.dumps(approval_message(bot).args["blocks"])
    assert f"database static role *{role}*" in shown
    assert f"database user `{user}`" in shown
    bot.click("approve", "1", user="U0SEC1")
    wait_status(settings, "succeeded")

    new = client.read(f"{mount}/static-creds/{role}")["data"]["password"]
    assert new != old
    assert not own_postgres.can_login(user, old)
    assert own_postgres.can_login(user, new)
    assert restarted_at(kube, "payments-api") is not None
    reply = wait_thread(bot.fake_slack, "Done")
    assert f"rotated the password of database static role {role}" in reply
    wait_for(lambda: "[audit]" in bot.fake_slack.all_text() and "Done" in bot.fake_slack.all_text())

    written = everything_written(bot, settings, kube, caplog, capfd, answers)
    assert role in written["Slack"]
    assert role in written["the database"]
    assert caplog.records
    assert "payments-api" in written["Kubernetes"]
    assert_nowhere(
        written,
        {
            "old password": old,
            "new password": new,
            "database superuser's password": own_postgres.superuser_password,
        },
    )
