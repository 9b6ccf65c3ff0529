"""``opsgate mcp`` driven by the ``mcp`` SDK's own client over stdio (issue 12).

The server runs as a subprocess (``python -m bot.cli mcp``) with an agent's token, and talks to
the bot served on a loopback port: list the tools, call ``restart``, a person approves in
Slack, ``wait_for_request`` returns ``succeeded``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from bot.blocks import APPROVE_ACTION
from bot.settings import Settings
from tests.fakes import slack
from tests.helpers.api import POLICY, store
from tests.helpers.bot import RunningBot, running_bot, wait_for

ROOT = Path(__file__).resolve().parent.parent
MCP = [sys.executable, "-m", "bot.cli", "mcp"]


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def served(settings: Settings, fake_slack: slack.FakeSlack) -> Iterator[tuple[RunningBot, str]]:
    with running_bot(settings, fake_slack) as bot:
        token, _ = store(settings).create(
            subject_id="U0DEPLOYBOT", subject_kind="agent", name="deploy-bot"
        )
        yield bot, token


def server_parameters(url: str, token: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "bot.cli", "mcp"],
        env={"OPSGATE_URL": url, "OPSGATE_TOKEN": token, "PYTHONPATH": str(ROOT)},
        cwd=str(ROOT),
    )


def test_list_tools_call_restart_and_wait_over_stdio(served: tuple[RunningBot, str]) -> None:
    bot, token = served
    outcome: dict[str, Any] = {}

    def approve_when_asked() -> None:
        wait_for(lambda: bot.fake_slack.calls_of("chat.postMessage"), what="the approval card")
        bot.click(APPROVE_ACTION, "1", user="U0SRE1")

    async def session() -> None:
        async with Client(server_parameters(bot.url, token), read_timeout_seconds=60) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            outcome["tools"] = tools
            filed = await client.call_tool(
                "restart", {"workload": "payments-api", "namespace": "payments", "reason": "OOM"}
            )
            outcome["filed"] = filed
            approver = threading.Thread(target=approve_when_asked)
            approver.start()
            waited = await client.call_tool(
                "wait_for_request", {"request_id": 1, "timeout_seconds": 30}
            )
            await anyio.to_thread.run_sync(approver.join)
            outcome["waited"] = waited
            outcome["refused"] = await client.call_tool(
                "scale", {"workload": "cart", "replicas": 1, "namespace": "checkout"}
            )

    anyio.run(session)
    tools = outcome["tools"]
    assert {
        "restart",
        "scale",
        "rollback",
        "access",
        "rotate",
        "restore",
        "get_request",
        "wait_for_request",
        "explain",
        "list_my_grants",
    } <= set(tools)
    schema = tools["restart"].input_schema
    assert set(schema["required"]) == {"workload", "namespace"}
    assert "pattern" in schema["properties"]["namespace"]  # the API model's constraints
    assert "approval" in tools["restart"].description
    assert "wait_for_request" in tools["restart"].description

    filed = outcome["filed"]
    assert not filed.is_error
    assert filed.structured_content["status"] == "pending"
    assert filed.structured_content["requester"]["agent"] == "deploy-bot"
    waited = outcome["waited"]
    assert not waited.is_error, waited.content
    assert waited.structured_content["status"] == "succeeded"
    refused = outcome["refused"]
    assert refused.is_error
    assert "automation may not scale" in refused.content[0].text


def test_mcp_without_a_token_says_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSGATE_")}
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "mcp"],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "set OPSGATE_URL and OPSGATE_TOKEN" in done.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_streamable_http_serves_the_same_tools(served: tuple[RunningBot, str]) -> None:
    bot, token = served
    port = free_port()
    server = subprocess.Popen(
        [*MCP, "--transport", "streamable-http", "--port", str(port)],
        env={**os.environ, "OPSGATE_URL": bot.url, "OPSGATE_TOKEN": token, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, timeout=30, what="opsgate mcp to listen")
        outcome: dict[str, Any] = {}

        async def session() -> None:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                outcome["tools"] = {t.name for t in (await client.list_tools()).tools}
                outcome["grants"] = await client.call_tool("list_my_grants", {})
                outcome["missing"] = await client.call_tool("get_request", {"request_id": 7})

        anyio.run(session)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert {"restart", "wait_for_request", "explain"} <= outcome["tools"]
    assert outcome["grants"].structured_content["total"] == 0
    assert outcome["missing"].is_error
    assert "There is no request #7" in outcome["missing"].content[0].text
