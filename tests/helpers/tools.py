"""Tools some tests need that pip does not install with opsgate: OpenBao (``bao``), PostgreSQL's
server binaries (``initdb``, ``pg_ctl``) and ``kubectl``.

Where one is missing, the tests that need it are skipped with the reason; in CI (the ``CI``
environment variable set, as ``.ci/run`` is run) they fail instead, so that a broken install step
cannot hide behind skips.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

KUBECTL_HINT = "it ships with the machine image and cannot be reinstalled"


def missing_tool(what: str, hint: str) -> NoReturn:
    """Skip the calling test, or fail it when ``CI`` is set, because ``what`` is not installed;
    ``hint`` says how to get it. Raises pytest's skip or fail exception."""
    message = f"{what} is not installed ({hint})"
    if os.environ.get("CI"):
        pytest.fail(
            f"{message}; CI is set, so the tests that need it fail instead of being skipped: "
            "fix the step that installs it",
            pytrace=False,
        )
    pytest.skip(message)


def require_kubectl() -> str:
    """The path of ``kubectl``, or :func:`missing_tool`."""
    path = shutil.which("kubectl")
    if path is None:
        missing_tool("kubectl", KUBECTL_HINT)
    return path
