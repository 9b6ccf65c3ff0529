"""Engine, sessions and migrations.

``make_engine(url)`` builds the SQLAlchemy engine for SQLite or PostgreSQL; ``migrate(url)``
applies the Alembic migrations in ``migrations/`` up to head (what ``opsgate migrate`` and
``opsgate serve`` do at start).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

import migrations
from approvals import audit_chain

MIGRATIONS_DIR = Path(migrations.__file__).parent


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    """An engine for ``url``.

    SQLite gets foreign keys on, a busy timeout of 30 seconds, the write-ahead log with
    ``synchronous=NORMAL`` (a commit is durable once written to the log, without an fsync per
    commit: it survives the process being killed, and an operating system crash or power loss
    may lose the last commits, never corrupt the database; "WAL mode" in SQLite's
    documentation), and its writers taken one at a time in the process (:class:`_OneWriter`).

    ``pooled=False`` opens a connection per use (for one-off runs such as migrations).
    """
    parsed = make_url(url)
    extra: dict[str, Any] = {} if pooled else {"poolclass": NullPool}
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **extra
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        _OneWriter().install(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **extra)


_WRITES = ("insert", "update", "delete", "replace", "begin")


class _OneWriter:
    """Takes SQLite's writers one at a time inside the process.

    SQLite has one writer at a time; a connection that finds the write lock taken waits in
    SQLite's busy handler, which sleeps 1, 2, 5, 10 … up to 100 ms between tries, however soon
    the lock is free: under a burst, each commit then costs tens of milliseconds of sleep. Here a
    write transaction (pysqlite begins one at the first ``INSERT``/``UPDATE``/``DELETE``, or at an
    explicit ``BEGIN IMMEDIATE``) first takes a lock of the process, released once the
    transaction's commit or rollback is done: a waiting writer starts the moment the previous
    one ends. Reads are not serialized (the write-ahead log lets them run beside a writer). A
    writer that waits longer than SQLite's busy timeout goes on without the lock, to SQLite's
    own wait, as before.
    """

    WAIT = 30.0
    """Seconds a writer waits for the lock (the engine's busy timeout)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: set[int] = set()
        """``id()`` of each DBAPI connection whose transaction holds the lock."""

    def install(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before_execute)
        for name in ("checkin", "invalidate", "close", "close_detached"):
            event.listen(engine.pool, name, self._pool_event)
        dialect = engine.dialect
        commit, rollback = dialect.do_commit, dialect.do_rollback

        def do_commit(dbapi_connection: Any) -> None:
            try:
                commit(dbapi_connection)
            finally:
                self._drop(dbapi_connection)

        def do_rollback(dbapi_connection: Any) -> None:
            try:
                rollback(dbapi_connection)
            finally:
                self._drop(dbapi_connection)

        # the dialect's own methods, on this engine's dialect only: after the commit is done
        # (the engine's "commit" event fires before it)
        setattr(dialect, "do_commit", do_commit)  # noqa: B010
        setattr(dialect, "do_rollback", do_rollback)  # noqa: B010

    def _before_execute(  # type: ignore[no-untyped-def]
        self, conn, _cursor, statement: str, _params, _context, _many
    ) -> None:
        dbapi_connection = conn.connection.dbapi_connection
        if id(dbapi_connection) in self._holders:
            return
        writes = statement.lstrip()[:7].lower().startswith(_WRITES)
        if writes and self._lock.acquire(timeout=self.WAIT):
            self._holders.add(id(dbapi_connection))

    def _pool_event(self, dbapi_connection: Any, *_args: Any) -> None:
        """A connection checked in, invalidated or closed ends whatever it held."""
        self._drop(dbapi_connection)

    def _drop(self, dbapi_connection: Any) -> None:
        key = id(dbapi_connection)
        if key in self._holders:
            self._holders.discard(key)
            self._lock.release()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (the gate reads them to notify), and
    that chain the audit events they write when they commit
    (:func:`approvals.audit_chain.install`)."""
    factory = sessionmaker(engine, expire_on_commit=False)
    audit_chain.install(factory)
    return factory


def alembic_config(url: str) -> Config:
    """An Alembic ``Config`` for ``url`` that needs no ``alembic.ini`` on disk."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Apply every migration up to head on the database at ``url`` (idempotent)."""
    command.upgrade(alembic_config(url), "head")


def ping(engine: Engine) -> None:
    """Run ``SELECT 1``; raises ``sqlalchemy.exc.OperationalError`` if the database is down."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


SCHEDULER_TABLE_PREFIX = "opsgate_jobs_"
"""Earlier versions' APScheduler job tables (``opsgate_jobs_<instance>``, one per instance name):
not part of opsgate's models. Migration 0009 drops them; a replica of an earlier version still
running during a rolling upgrade may create one again, which autogenerate must not mistake for
drift."""


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object`` hook: skip the scheduler's job tables (and their indexes),
    which APScheduler manages itself, when comparing the database with the models."""
    table = getattr(obj, "table", None)
    table_name = name if type_ == "table" else getattr(table, "name", None)
    return not (
        reflected
        and compare_to is None
        and table_name is not None
        and table_name.startswith(SCHEDULER_TABLE_PREFIX)
    )
