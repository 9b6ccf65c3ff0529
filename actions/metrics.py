"""The backends' Prometheus counter (prometheus-client): in ``actions``, the lowest layer, so
that the adapters count their own failures. Every other metric is in :mod:`approvals.metrics`.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import Counter

from actions.errors import ActionError, Forbidden, MaybeApplied, PermanentError, TemporaryError

BACKEND_ERRORS = Counter(
    "opsgate_backend_errors",
    "Calls to a backend (kubernetes, vault) that failed: no answer, 5xx, 429, refused "
    "credentials or an unexpected answer; not the 404, 409 and 422 answers about a request.",
    ["backend"],
)

E = TypeVar("E", bound=ActionError)


def counted(backend: str, error: E) -> E:
    """Count ``error`` (already translated by the adapter of ``backend``) in
    ``opsgate_backend_errors_total`` when it says the backend failed; return it unchanged."""
    if isinstance(error, TemporaryError | MaybeApplied | Forbidden | PermanentError):
        BACKEND_ERRORS.labels(backend).inc()
    return error
