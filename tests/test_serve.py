"""``opsgate serve`` as a real process on a real socket, and the CLI's other commands."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.app import create_app
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, write_kubeconfig
from tests.helpers.bot import serve_in_thread, wait_for
from tests.helpers.serve import OPSGATE, env_for, free_port


@pytest.fixture
def served(
    tmp_path: Path,
    database_url: str,
    fake_slack: slack.FakeSlack,
    kube: FakeKubernetes,
    policy_path: Path,
) -> Iterator[str]:
    port = free_port()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"prod": kube, "staging": kube})
    env = env_for(
        tmp_path,
        database_url,
        policy_path,
        SLACK_API_URL=fake_slack.api_url,
        KUBECONFIG=str(kubeconfig),
    )
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [OPSGATE, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=30, what="opsgate serve to answer /healthz")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def test_serve_answers_a_signed_restart_over_a_real_socket(
    served: str, fake_slack: slack.FakeSlack, kube: FakeKubernetes
) -> None:
    assert httpx.get(f"{served}/readyz").json()["status"] == "ready"
    body = slack.slash_command_body(
        "restart payments-api -n payments --reason 'served'",
        user_id="U0DEV1",
        response_url=fake_slack.response_url(),
    )
    answer = httpx.post(f"{served}/slack/events", content=body, headers=slack.signed_headers(body))
    assert answer.status_code == 200
    assert "Checking" in answer.json()["text"]
    approval = wait_for(
        lambda: [c for c in fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")]
    )[0]
    click = slack.block_action_body(
        "approve",
        "1",
        user_id="U0SRE1",
        channel_id="C0APPROVALS",
        message_ts=approval.response["ts"],
        response_url=fake_slack.response_url(),
    )
    assert httpx.post(
        f"{served}/slack/events", content=click, headers=slack.signed_headers(click)
    ).is_success

    def restarted() -> bool:
        obj = kube.get_object("apps/v1", "Deployment", "payments", "payments-api")
        assert obj is not None
        annotations = obj["spec"]["template"]["metadata"].get("annotations") or {}
        return "kubectl.kubernetes.io/restartedAt" in annotations

    wait_for(restarted, what="the Deployment to be restarted")
    forged = httpx.post(
        f"{served}/slack/events",
        content=body,
        headers=slack.signed_headers(body, secret="forged"),
    )
    assert forged.status_code == 401


def test_serve_refuses_an_invalid_policy_naming_field_and_line(
    tmp_path: Path, database_url: str
) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(
        "version: 1\n"
        "approval_channel: C0APPROVALS\n"
        "environments:\n"
        "  prod: {namespaces: [payments]}\n"
        "rules:\n"
        "  - match: {action: restart}\n"
        "    aprovers: [sre]\n"
    )
    result = subprocess.run(
        [OPSGATE, "serve", "--port", str(free_port())],
        env=env_for(tmp_path, database_url, policy),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"{policy}:7: rules[0].aprovers: Extra inputs are not permitted" in result.stderr


def test_serve_requires_the_slack_variables(tmp_path: Path, database_url: str) -> None:
    env = env_for(tmp_path, database_url, tmp_path / "none.yml")
    del env["SLACK_BOT_TOKEN"]
    result = subprocess.run(
        [OPSGATE, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "SLACK_BOT_TOKEN must be set" in result.stderr


def test_migrate_and_policy_check(tmp_path: Path, database_url: str, policy_path: Path) -> None:
    env = env_for(tmp_path, database_url, policy_path)
    migrate = subprocess.run(
        [OPSGATE, "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "database at head" in migrate.stdout
    check = subprocess.run(
        [OPSGATE, "policy", "check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0
    assert "OK (3 rules" in check.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("version: 1\nrules: [\n")
    check = subprocess.run(
        [OPSGATE, "policy", "check", str(bad)], env=env, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 1
    assert f"{bad}:3: (yaml)" in check.stderr


def test_readyz_reports_an_unreachable_database(
    tmp_path: Path, fake_slack: slack.FakeSlack, policy_path: Path
) -> None:
    settings = Settings(
        database_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none",
        policy_path=str(policy_path),
        slack_bot_token=slack.BOT_TOKEN,
        slack_signing_secret=slack.SIGNING_SECRET,
        slack_api_url=fake_slack.api_url,
        _env_file=None,
    )
    # no lifespan: the migrations at start would fail, on purpose, against this database
    server, thread, url = serve_in_thread(create_app(settings), lifespan="off")
    try:
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"].startswith("unreachable")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_shipped_policy_and_the_readme_example_validate() -> None:
    from approvals.policy import load_policy, parse_policy

    root = Path(__file__).resolve().parent.parent
    assert load_policy(root / "policy.yml").policy.rules
    readme = (root / "README.md").read_text()
    example = readme.split("## Policy", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    loaded = parse_policy(example, source="README.md")
    assert [r.deny is not None for r in loaded.policy.rules] == [False, False, True]
