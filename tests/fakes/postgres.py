"""A PostgreSQL server of the test's own, one that checks passwords.

The shared PostgreSQL on 127.0.0.1:5432 trusts every connection, so a test that must see an old
password refused starts its own: ``initdb`` (``--auth=scram-sha-256``, a superuser with a known
password) in a temporary directory, then ``pg_ctl start`` listening on 127.0.0.1 only, on a free
port, with no Unix socket. ``stop()`` runs ``pg_ctl stop -m immediate`` and removes the directory.
PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user.

Python API::

    with OwnPostgres() as pg:                   # or pg = OwnPostgres(); pg.start() ... pg.stop()
        pg.host, pg.port                        # "127.0.0.1", PORT
        pg.superuser, pg.superuser_password     # "opsgate_admin", "..."
        pg.connect(user, password)              # a psycopg connection (autocommit)
        pg.can_login(user, password)            # True / False (authentication failed)
        pg.execute("CREATE ROLE ...")           # as the superuser
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from tests.fakes.openbao import free_port

SEARCH_DIRS = (
    "/usr/local/bin",
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/14/bin",
)


def postgres_binaries() -> tuple[str, str] | None:
    """``(initdb, pg_ctl)`` paths: on PATH, /usr/local/bin or Debian's /usr/lib/postgresql/*/bin;
    None where no PostgreSQL server is installed."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    for directory in SEARCH_DIRS:
        a, b = Path(directory, "initdb"), Path(directory, "pg_ctl")
        if a.exists() and b.exists():
            return str(a), str(b)
    return None


class OwnPostgres:
    """One PostgreSQL cluster in a temporary directory, scram-sha-256 for every connection."""

    def __init__(self, *, superuser: str = "opsgate_admin") -> None:
        binaries = postgres_binaries()
        if binaries is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) are installed")
        self.initdb, self.pg_ctl = binaries
        self.host = "127.0.0.1"
        self.port = 0
        self.superuser = superuser
        self.superuser_password = secrets.token_urlsafe(16)
        self._dir: Path | None = None
        self._run_as: dict[str, Any] = {}

    def __enter__(self) -> OwnPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def data_dir(self) -> Path:
        assert self._dir is not None
        return self._dir / "data"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
            **self._run_as,
        )

    def start(self) -> None:
        """initdb, then pg_ctl start on a free loopback port; waits until it accepts logins."""
        self._dir = Path(tempfile.mkdtemp(prefix="opsgate-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self._dir, user.pw_uid, user.pw_gid)
            self._run_as = {"user": user.pw_uid, "group": user.pw_gid}
        pwfile = self._dir / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        if self._run_as:
            os.chown(pwfile, self._run_as["user"], self._run_as["group"])
        pwfile.chmod(0o600)
        try:
            self._run(
                self.initdb,
                "-D",
                str(self.data_dir),
                "-U",
                self.superuser,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",
            )
        finally:
            pwfile.unlink()
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            options = (
                f"-h {self.host} -p {self.port} -c unix_socket_directories='' "
                "-c fsync=off -c password_encryption=scram-sha-256"
            )
            try:
                self._run(
                    self.pg_ctl,
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(self._dir / "server.log"),
                    "-o",
                    options,
                )
                return
            except subprocess.CalledProcessError as exc:
                last_error = exc.stderr + self.server_log()[-2000:]
        self.stop()
        raise RuntimeError(f"own PostgreSQL did not start: {last_error}")

    def server_log(self) -> str:
        if self._dir is None or not (self._dir / "server.log").exists():
            return ""
        return (self._dir / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        """``pg_ctl stop -m immediate`` and remove the directory."""
        if self._dir is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                [self.pg_ctl, "stop", "-D", str(self.data_dir), "-m", "immediate", "-w"],
                capture_output=True,
                timeout=60,
                check=False,
                **self._run_as,
            )
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def connect(
        self, user: str, password: str, dbname: str = "postgres"
    ) -> psycopg.Connection[Any]:
        """A psycopg connection over TCP (so scram-sha-256 applies), autocommit."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=user,
            password=password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=10,
        )

    def can_login(self, user: str, password: str) -> bool:
        """True if ``user`` logs in with ``password``; False if authentication fails."""
        try:
            with self.connect(user, password) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                return False
            raise

    def execute(self, sql: str) -> None:
        """Run ``sql`` as the superuser."""
        with self.connect(self.superuser, self.superuser_password) as conn:
            conn.execute(sql.encode())
