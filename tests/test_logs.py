"""JSON logs (issue 14 item 6): ``OPSGATE_LOG_FORMAT=json`` writes one JSON object per line,
with the request ID where there is one; uvicorn's lines go through the same formatter, and
APScheduler's INFO chatter is gone. The end-to-end test runs the real ``opsgate serve`` process.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.logs import HANDLER_NAME, configure_logging, log_context
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    try:
        yield stream
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
            root.removeHandler(handler)
        logging.getLogger("apscheduler").setLevel(logging.NOTSET)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_the_request_and_the_context(
    json_lines: io.StringIO,
) -> None:
    with log_context(reference="3f2a9c0d1e7b", actor="U0DEV1", action="restart"):
        logging.getLogger("approvals.gate").warning("request #%s failed: %s", 42, "boom\nline 2")
    logging.getLogger("approvals.grants").error("grant #7: revocation failed, will retry")
    try:
        raise RuntimeError("unexpected")
    except RuntimeError:
        logging.getLogger("bot.work").exception("[abc] a click failed unexpectedly")
    logging.getLogger("apscheduler.scheduler").info(
        "Adding job tentatively -- it will be properly scheduled when the scheduler starts"
    )
    first, second, third = parsed(json_lines)
    assert first["level"] == "WARNING"
    assert first["logger"] == "approvals.gate"
    assert first["message"] == "request #42 failed: boom\nline 2"
    assert (first["request_id"], first["reference"], first["actor"], first["action"]) == (
        42,
        "3f2a9c0d1e7b",
        "U0DEV1",
        "restart",
    )
    assert first["timestamp"].endswith("+00:00")
    assert second["grant_id"] == 7
    assert "reference" not in second  # outside the block
    assert "RuntimeError: unexpected" in third["exc_info"]


def test_the_text_format_is_for_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("text", stream=stream)
    try:
        logging.getLogger("approvals.gate").warning("request #%s failed", 1)
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
            root.removeHandler(handler)
    assert " WARNING approvals.gate: request #1 failed" in stream.getvalue()


def test_an_unknown_log_format_is_refused_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "OPSGATE_LOG_FORMAT": "yaml"},
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "OPSGATE_LOG_FORMAT" in done.stderr
    assert "'text' or 'json'" in done.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_opsgate_serve_logs_json_with_the_request_id(
    settings: Settings, kube: FakeKubernetes, fake_slack: slack.FakeSlack, tmp_path: Path
) -> None:
    kube.stall("staging-web", "web")  # the rollout never completes: a warning names the request
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "OPSGATE_LOG_FORMAT": "json",
        "OPSGATE_DATABASE_URL": settings.database_url,
        "OPSGATE_POLICY": settings.policy_path,
        "KUBECONFIG": settings.kubeconfig or "",
        "SLACK_BOT_TOKEN": slack.BOT_TOKEN,
        "SLACK_SIGNING_SECRET": slack.SIGNING_SECRET,
        "SLACK_API_URL": fake_slack.api_url,
        "OPSGATE_ROLLOUT_TIMEOUT": "1",
        "OPSGATE_ROLLOUT_POLL_INTERVAL": "0.2",
    }
    log_path = tmp_path / "stderr.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"

            def ready() -> bool:
                try:
                    return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(ready, timeout=60, what="opsgate serve to be ready")
            body = slack.slash_command_body(
                "restart web -n staging-web",
                user_id="U0DEV1",
                response_url=fake_slack.response_url(),
            )
            answer = httpx.post(
                f"{url}/slack/events", content=body, headers=slack.signed_headers(body), timeout=10
            )
            assert answer.status_code == 200
            assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200

            def stalled() -> list[dict[str, Any]]:
                lines = [json.loads(line) for line in log_path.read_text().splitlines()]
                return [line for line in lines if line.get("request_id") == 1]

            [warning, *_] = wait_for(stalled, timeout=30, what="a line about request #1")
        finally:
            process.terminate()
            process.wait(timeout=30)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]  # every line
    assert warning["level"] == "WARNING"
    assert warning["logger"] == "approvals.rollouts"
    assert {"timestamp", "level", "logger", "message"} <= set(lines[0])
    messages = [(line["logger"], line["message"]) for line in lines]
    assert any(
        logger == "uvicorn.error" and message.startswith("Uvicorn running on")
        for logger, message in messages
    )
    assert not [m for _, m in messages if "Adding job tentatively" in m]
    assert not [line for line in lines if line["logger"].startswith("apscheduler")]
    # the probes' and scrapes' access lines are dropped; the Slack request's is kept
    access = [m for logger, m in messages if logger == "uvicorn.access"]
    assert any("/slack/events" in m for m in access)
    assert not [m for m in access if "/readyz" in m or "/metrics" in m]


def test_work_handed_off_logs_with_its_reference_actor_and_action(
    json_lines: io.StringIO,
) -> None:
    from bot.work import Workers

    workers = Workers(1)
    answers: list[str] = []

    def work() -> None:
        logging.getLogger("approvals.gate").info("request #%s: previewed", 9)
        raise RuntimeError("a bug")

    reference = workers.submit(
        work, answer=answers.append, what="`/ops restart web`", actor="U0DEV1", action="restart"
    )
    workers.shutdown(wait=True)
    previewed, failed = parsed(json_lines)
    for line in (previewed, failed):
        assert (line["reference"], line["actor"], line["action"]) == (
            reference,
            "U0DEV1",
            "restart",
        )
    assert previewed["request_id"] == 9
    assert failed["level"] == "ERROR"
    assert "RuntimeError: a bug" in failed["exc_info"]
    [answer] = answers
    assert reference in answer  # the person's answer names the line's reference
