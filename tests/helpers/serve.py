"""Running the real opsgate command in a child process."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from tests.fakes import slack

OPSGATE = shutil.which("opsgate", path=str(Path(sys.executable).parent)) or "opsgate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(tmp_path: Path, database_url: str, policy: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPSGATE_"))}
    env |= {
        "OPSGATE_DATABASE_URL": database_url,
        "OPSGATE_POLICY": str(policy),
        "SLACK_BOT_TOKEN": slack.BOT_TOKEN,
        "SLACK_SIGNING_SECRET": slack.SIGNING_SECRET,
        "HOME": str(tmp_path),
    }
    return env | extra
