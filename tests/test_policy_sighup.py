"""``kill -HUP`` reloads the policy of a real ``opsgate serve`` process (issue 6, item 9).

The bot's policy path is a symlink into another directory, and the tests rewrite the target in
place: the file watcher, which watches the link's directory, sees nothing, so only SIGHUP can
make the process read the new bytes. The process must survive the signal (SIGHUP's default
action is to terminate), put the new policy in force for the next request (audited under its
SHA-256), and keep the previous policy in force when the new file is invalid, saying so in the
audit channel.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from approvals.models import AuditEvent
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, write_kubeconfig
from tests.helpers.bot import wait_for
from tests.helpers.policy import POLICY
from tests.helpers.serve import OPSGATE, env_for, free_port
from tests.helpers.slack_flow import responses

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this OS")

DENIED = POLICY.replace(
    "  - match: {action: restart, environment: prod}\n    approvers: [sre]\n",
    '  - match: {action: restart, environment: prod}\n    deny: "prod restarts are frozen"\n',
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    target: Path
    log: Path
    database_url: str

    def policy_sha(self) -> str:
        assert self.proc.poll() is None, f"opsgate exited:\n{self.log_text()}"
        return str(httpx.get(f"{self.url}/readyz", timeout=5).json()["policy"])

    def log_text(self) -> str:
        return self.log.read_text()

    def hangup(self) -> None:
        assert self.proc.poll() is None, self.log_text()
        self.proc.send_signal(signal.SIGHUP)

    def audit(self) -> list[AuditEvent]:
        engine = create_engine(self.database_url)
        try:
            with Session(engine) as session:
                return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        finally:
            engine.dispose()


@pytest.fixture
def served(
    tmp_path: Path, database_url: str, fake_slack: slack.FakeSlack, kube: FakeKubernetes
) -> Iterator[Served]:
    repo = tmp_path / "policy-repo"
    repo.mkdir()
    target = repo / "policy.yml"
    target.write_text(POLICY)
    conf = tmp_path / "conf"
    conf.mkdir()
    link = conf / "policy.yml"
    link.symlink_to(target)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"prod": kube, "staging": kube})
    env = env_for(
        tmp_path,
        database_url,
        link,
        SLACK_API_URL=fake_slack.api_url,
        KUBECONFIG=str(kubeconfig),
    )
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [OPSGATE, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            # /readyz answers once the lifespan (which installs the SIGHUP handler) has run
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, timeout=30, what="opsgate serve to be ready")
        yield Served(url, proc, target, log_path, database_url)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def ask_restart(served: Served, fake_slack: slack.FakeSlack) -> str:
    """A signed ``/ops restart payments-api -n payments``; returns the response_url."""
    response_url = fake_slack.response_url()
    body = slack.slash_command_body(
        "restart payments-api -n payments", user_id="U0DEV1", response_url=response_url
    )
    answer = httpx.post(
        f"{served.url}/slack/events", content=body, headers=slack.signed_headers(body)
    )
    assert answer.status_code == 200
    return response_url


def test_sighup_puts_the_new_policy_in_force_in_a_running_process(
    served: Served, fake_slack: slack.FakeSlack
) -> None:
    assert served.policy_sha() == sha(POLICY)
    served.target.write_text(DENIED)  # in place, outside the watched directory

    served.hangup()
    wait_for(lambda: served.policy_sha() == sha(DENIED), what="the new policy to be in force")
    assert served.proc.poll() is None, "SIGHUP killed opsgate: no handler was installed"
    log = served.log_text()
    assert "SIGHUP: reloading the policy" in log
    assert "policy file changed" not in log  # the reload came from the signal, not the watcher

    response_url = ask_restart(served, fake_slack)
    [answer] = wait_for(lambda: responses(fake_slack, response_url), what="the answer")
    assert "Not allowed: prod restarts are frozen" in answer
    rejected = wait_for(
        lambda: [e for e in served.audit() if e.event == "rejected"], what="the audit event"
    )[-1]
    assert rejected.policy_sha256 == sha(DENIED)
    assert not [c for c in fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")]


def test_sighup_with_an_invalid_file_keeps_the_policy_and_tells_the_audit_channel(
    served: Served, fake_slack: slack.FakeSlack
) -> None:
    served.target.write_text(POLICY.replace("approvers: [sre]", "aprovers: [sre]", 1))

    served.hangup()
    [warning] = wait_for(
        lambda: [
            c
            for c in fake_slack.calls_of("chat.postMessage")
            if c.args["channel"] == "C0AUDIT" and "invalid" in c.args["text"]
        ],
        what="the audit channel to hear of the invalid policy",
    )
    assert "the previous policy stays in force" in warning.args["text"]
    assert "rules[1].aprovers: Extra inputs are not permitted" in warning.args["text"]
    assert served.proc.poll() is None
    assert served.policy_sha() == sha(POLICY)

    # the previous policy still decides: a prod restart asks the sre group
    ask_restart(served, fake_slack)
    approval = wait_for(
        lambda: [c for c in fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")],
        what="the approval message",
    )[0]
    assert approval.args["channel"] == "C0APPROVALS"
    submitted = wait_for(
        lambda: [e for e in served.audit() if e.event == "submitted"], what="the audit event"
    )[0]
    assert submitted.policy_sha256 == sha(POLICY)
