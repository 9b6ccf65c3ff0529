"""The README's script with ``curl`` alone files, waits for and reads a request through the HTTP
API (issue 12, "Done when"), run with ``sh`` against the bot on a loopback port while a person
approves in Slack."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from bot.blocks import APPROVE_ACTION
from bot.settings import Settings
from tests.fakes import slack
from tests.helpers.api import POLICY, store
from tests.helpers.bot import RunningBot, running_bot, wait_for
from tests.helpers.tools import missing_tool

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def policy_text() -> str:
    return POLICY


def readme_script() -> str:
    text = README.read_text()
    after = text.split("A script with `curl` alone", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_curl_script_files_waits_and_reads(
    settings: Settings, fake_slack: slack.FakeSlack
) -> None:
    for tool in ("curl", "sed", "grep", "cut"):
        if shutil.which(tool) is None:
            missing_tool(tool, f"install {tool} (the README's script uses it)")
    with running_bot(settings, fake_slack) as api_bot:
        token, _ = store(settings).create(
            subject_id="U0DEPLOYBOT", subject_kind="agent", name="deploy-bot"
        )
        run_script(api_bot, token)


def run_script(api_bot: RunningBot, agent_token: str) -> None:
    def approve() -> None:
        wait_for(lambda: api_bot.fake_slack.calls_of("chat.postMessage"), what="the card")
        api_bot.click(APPROVE_ACTION, "1", user="U0SRE1")

    approver = threading.Thread(target=approve)
    approver.start()
    done = subprocess.run(
        ["sh", "-c", readme_script()],
        env={**os.environ, "OPSGATE_URL": api_bot.url, "OPSGATE_TOKEN": agent_token},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    approver.join()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "request #1: succeeded"
