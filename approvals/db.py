"""Engine, sessions and migrations.

``make_engine(url)`` builds the SQLAlchemy engine for SQLite or PostgreSQL; ``migrate(url)``
applies the Alembic migrations in ``migrations/`` up to head (what ``opsgate migrate`` and
``opsgate serve`` do at start).
"""

from __future__ import annotations

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
    """An engine for ``url``. SQLite gets foreign keys on and a busy timeout of 30 seconds.

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
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **extra)


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
not part of opsgate's models. Migration 0008 drops them; a replica of an earlier version still
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
