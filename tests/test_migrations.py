"""The Alembic migrations build exactly the models' schema, and go down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import create_engine, inspect

from approvals.db import alembic_config, include_object, migrate
from approvals.models import Base


def test_migrations_match_the_models_and_are_reversible(database_url: str) -> None:
    migrate(database_url)
    migrate(database_url)  # idempotent
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        assert {"requests", "approvals", "audit_events"} <= set(inspect(engine).get_table_names())
        command.downgrade(alembic_config(database_url), "base")
        inspect(engine).clear_cache()
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate(database_url)
        assert "requests" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_the_schedulers_job_table_is_not_mistaken_for_drift(database_url: str) -> None:
    migrate(database_url)
    engine = create_engine(database_url)
    try:
        store = SQLAlchemyJobStore(engine=engine, tablename="opsgate_jobs_opsgate")
        store.start(None, "grants")  # type: ignore[arg-type]  # creates its table
        assert "opsgate_jobs_opsgate" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            opts = {"compare_type": True, "include_object": include_object}
            context = MigrationContext.configure(conn, opts=opts)
            assert compare_metadata(context, Base.metadata) == []
            plain = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(plain, Base.metadata) != []  # the hook is what hides it
    finally:
        engine.dispose()


def test_migration_0009_drops_the_job_tables_earlier_versions_left(database_url: str) -> None:
    """Each pod of an earlier version left ``opsgate_jobs_<host name>`` behind; 0009 drops them
    all, and nothing else."""
    config = alembic_config(database_url)
    before_0009 = ScriptDirectory.from_config(config).get_revision("0009").down_revision
    assert isinstance(before_0009, str)
    command.upgrade(config, before_0009)
    engine = create_engine(database_url)
    try:
        for instance in ("opsgate_7d9f8c6b5_x2x4z", "opsgate_7d9f8c6b5_k8q2p"):
            store = SQLAlchemyJobStore(engine=engine, tablename=f"opsgate_jobs_{instance}")
            store.start(None, "grants")  # type: ignore[arg-type]  # creates its table
        before = set(inspect(engine).get_table_names())
        assert len([n for n in before if n.startswith("opsgate_jobs_")]) == 2
        command.upgrade(config, "0009")
        inspect(engine).clear_cache()
        after = set(inspect(engine).get_table_names())
        assert after == {n for n in before if not n.startswith("opsgate_jobs_")}
    finally:
        engine.dispose()
