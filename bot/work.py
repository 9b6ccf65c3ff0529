"""opsgate's own bounded workers: what a Slack listener hands off once it has acked.

Slack waits 3 s for an ack. A listener only validates, acks and hands off; everything that calls
the cluster, Vault or Slack (a preview, an execution, a notification) runs here, on a pool of
``OPSGATE_WORKERS`` threads that is separate from the threads that answer Slack, so a burst of
slow work never delays an ack. Rollouts are not followed here: a periodic job follows them
(:mod:`approvals.rollouts`), so no worker waits minutes on one.

Every failure of handed-off work is answered to the person who caused it, once, and logged once
with a reference that is in both the answer and the log line: an answer for the person (a
:class:`~approvals.gate.GateError`) as it is; the database being unreachable as such; anything
else as an unexpected error.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import DBAPIError, OperationalError

from approvals.gate import GateError
from approvals.grants import GrantError
from bot import blocks
from bot.logs import log_context

log = logging.getLogger(__name__)

Answer = Callable[[str], None]
"""Tells the person who caused the work, alone (an ephemeral message, a thread reply)."""

DATABASE_DOWN = (
    "opsgate cannot reach its database; nothing was changed. Try again in a minute, and tell "
    "the platform team if it lasts."
)


def new_reference() -> str:
    """A short ID for one piece of work, shown to the person and logged with its failure."""
    return uuid.uuid4().hex[:10]


def failure_answer(exc: BaseException, what: str, reference: str) -> str:
    """What to tell the person when ``what`` (e.g. ``/ops restart x``, ``Approve on #12``)
    failed with ``exc``; logs it once, with ``reference``."""
    if isinstance(exc, GateError | GrantError):
        return str(exc)
    if isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        log.error("[%s] %s: the database is unreachable: %s", reference, what, type(exc).__name__)
        return DATABASE_DOWN
    # only the type's name for people: an unexpected message might hold anything
    log.error("[%s] %s failed unexpectedly", reference, what, exc_info=exc)
    return (
        f"opsgate hit an unexpected error ({type(exc).__name__}) while handling {what}. "
        f"Check `/ops status` before trying again (reference {reference})."
    )


def answer_safely(answer: Answer, text: str, reference: str) -> None:
    """Deliver ``text`` with ``answer``; a failure to deliver is logged, never raised."""
    try:
        answer(blocks.error_message(text))
    except Exception as exc:  # noqa: BLE001 - the person cannot be told; the log must say so
        log.warning("[%s] could not answer: %s: %s", reference, type(exc).__name__, exc)


class Workers:
    """A bounded pool of ``max_workers`` threads for work handed off by listeners.

    :meth:`submit` never blocks on the work; :meth:`shutdown` lets started work finish.
    """

    def __init__(self, max_workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="opsgate-work")

    def submit(
        self,
        work: Callable[[], None],
        *,
        answer: Answer,
        what: str,
        actor: str | None = None,
        action: str | None = None,
    ) -> str:
        """Run ``work()`` on a worker; if it raises, tell the person with ``answer`` (see the
        module docstring). ``what`` names the work for people and the log; ``actor`` (the
        Slack user) and ``action`` go into every log line of the work. Returns the work's
        reference."""
        reference = new_reference()
        self._pool.submit(
            self.run,
            work,
            answer=answer,
            what=what,
            reference=reference,
            actor=actor,
            action=action,
        )
        return reference

    @staticmethod
    def run(
        work: Callable[[], None],
        *,
        answer: Answer,
        what: str,
        reference: str,
        actor: str | None = None,
        action: str | None = None,
    ) -> None:
        """Run ``work()`` here, answering its failure (what :meth:`submit` does on a worker)."""
        # every line logged for the work carries them (bot/logs.py)
        with log_context(reference=reference, actor=actor, action=action):
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - every failure is answered, none escapes
                answer_safely(answer, failure_answer(exc, what, reference), reference)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop taking work; with ``wait``, let what was handed off finish first."""
        self._pool.shutdown(wait=wait)
