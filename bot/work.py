"""opsgate's own bounded workers: what a Slack listener hands off once it has acked.

Slack waits 3 s for an ack. A listener only validates, acks and hands off; everything that calls
the cluster, Vault or Slack (a preview, an execution, a notification) runs here, on a pool of
``OPSGATE_WORKERS`` threads that is separate from the threads that answer Slack, so a burst of
slow work never delays an ack. Rollouts are not followed here: a periodic job follows them
(:mod:`approvals.rollouts`), so no worker waits minutes on one.

What is handed off is owed, and the database says so (:mod:`approvals.inbox`): a listener hands
off with :meth:`Workers.hand_off`, which writes the inbox row (and finds a redelivery of the same
Slack request in the same single ``INSERT``) before the listener's ack, and a worker marks it
done. :meth:`Workers.replay_owed` (at start and periodically) runs again, exactly once across
replicas, what a process that died had acked and not finished; each kind of work is rebuilt from
its stored payload by the handler registered with :meth:`Workers.handles`.

Every failure of handed-off work is answered to the person who caused it, once, and logged once
with a reference that is in both the answer and the log line: an answer for the person (a
:class:`~approvals.gate.GateError`) as it is; the database being unreachable as such; anything
else as an unexpected error.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from approvals.gate import GateError
from approvals.grants import GrantError
from approvals.inbox import MAX_ATTEMPTS, AlreadyDone, Inbox, Owed
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


@dataclass(frozen=True)
class Job:
    """One piece of owed work, rebuilt from its payload: ``work()`` returns True when it settled
    its inbox row itself (:func:`approvals.inbox.settle`); ``answer`` tells the person who asked;
    ``what`` names it for them and the log; ``actor`` (the Slack user) and ``action`` go into every
    log line of the work (bot/logs.py)."""

    work: Callable[[], bool | None]
    answer: Answer
    what: str
    actor: str | None = None
    action: str | None = None


_HELD: ContextVar[list[Callable[[], object]] | None] = ContextVar("opsgate_held", default=None)
"""Work handed off inside :meth:`Workers.holding`, started when the block's caller says."""

Handler = Callable[[int | None, dict[str, Any]], Job]
"""Builds the job of an owed row: (the row's ID, or None when it could not be written; its
payload)."""


class Workers:
    """A bounded pool of ``max_workers`` threads for work handed off by listeners.

    ``inbox``, when given, is where what is handed off is owed (see the module docstring);
    without one, handed-off work lives in memory only. :meth:`submit` and :meth:`hand_off` never
    block on the work; :meth:`shutdown` lets started work finish.
    """

    def __init__(self, max_workers: int, *, inbox: Inbox | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="opsgate-work")
        self._inbox = inbox
        self._handlers: dict[str, Handler] = {}

    @contextmanager
    def holding(self) -> Iterator[Callable[[], None]]:
        """Hold the work handed off inside the block (in this context, threads it runs on
        included) instead of starting it; yields the function that starts what was held. The
        HTTP endpoint starts it once the ack is sent, so that a request's own work never
        competes with its ack for the interpreter. Held work is owed already: a process that
        dies before starting it leaves it to :meth:`replay_owed`."""
        held: list[Callable[[], object]] = []
        token = _HELD.set(held)

        def start() -> None:
            while held:
                try:
                    held.pop(0)()
                except RuntimeError as exc:  # the pool was shut down: a stop
                    log.warning("held work not started (%s); it is replayed at the next start", exc)

        try:
            yield start
        finally:
            _HELD.reset(token)

    def _start(self, *args: Any, **kwargs: Any) -> None:
        """``self._pool.submit(*args, **kwargs)``, or held for :meth:`holding`."""
        held = _HELD.get()
        if held is None:
            self._pool.submit(*args, **kwargs)
        else:
            held.append(lambda: self._pool.submit(*args, **kwargs))

    def handles(self, kind: str, handler: Handler) -> None:
        """Build the jobs of owed rows of ``kind`` with ``handler`` (listeners register theirs)."""
        self._handlers[kind] = handler

    def hand_off(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        user_id: str,
        response_url: str | None = None,
        dedupe_key: str | None = None,
    ) -> bool:
        """Owe ``payload``'s work of ``kind`` (one ``INSERT``, before the caller acks) and run it
        on a worker; False, with nothing run, when ``dedupe_key`` was already handed off (a
        redelivery). ``payload`` holds what the handler needs and nothing secret. When the
        database cannot take the row, the work is handed off in memory all the same (it will
        meet the same database and answer that)."""
        owed_id: int | None = None
        if self._inbox is not None:
            try:
                owed_id = self._inbox.owe(
                    kind,
                    payload,
                    user_id=user_id,
                    response_url=response_url,
                    dedupe_key=dedupe_key,
                )
            except SQLAlchemyError as exc:
                log.warning("%s work could not be recorded as owed: %s", kind, type(exc).__name__)
            else:
                if owed_id is None:
                    return False
        job = self._handlers[kind](owed_id, payload)
        self._start(self._run_owed, owed_id, job, new_reference(), time.monotonic())
        return True

    def replay_owed(self, batch: int = 100) -> list[int]:
        """Claim the owed rows a dead process left (:meth:`approvals.inbox.Inbox.claim`) and run
        each once more on a worker; one claimed more than
        :data:`~approvals.inbox.MAX_ATTEMPTS` times is given up and its person told. Returns
        the IDs claimed. Run at start and periodically."""
        if self._inbox is None:
            return []
        claimed: list[int] = []
        while True:
            rows = self._inbox.claim(batch)
            for owed in rows:
                claimed.append(owed.id)
                self._replay(owed)
            if len(rows) < batch:
                return claimed

    def _replay(self, owed: Owed) -> None:
        assert self._inbox is not None
        handler = self._handlers.get(owed.kind)
        if handler is None:
            log.error("owed work #%s is of an unknown kind %r; dropped", owed.id, owed.kind)
            self._inbox.done(owed.id)
            return
        job = handler(owed.id, owed.payload)
        reference = new_reference()
        if owed.attempts > MAX_ATTEMPTS:
            log.error(
                "[%s] %s (owed work #%s) was started %s times without finishing; given up",
                reference,
                job.what,
                owed.id,
                owed.attempts - 1,
            )
            text = (
                f"opsgate stopped while handling {job.what}, {owed.attempts - 1} times, and will "
                f"not try again. Check `/ops status` before asking again (reference {reference})."
            )
            answer_safely(job.answer, text, reference)
            self._inbox.done(owed.id)
            return
        log.info(
            "[%s] replaying %s (owed work #%s, received %s, attempt %s)",
            reference,
            job.what,
            owed.id,
            owed.received_at.isoformat(timespec="seconds"),
            owed.attempts,
        )
        self._pool.submit(self._run_owed, owed.id, job, reference, time.monotonic())

    def _run_owed(self, owed_id: int | None, job: Job, reference: str, queued: float) -> None:
        """Run ``job`` (row ``owed_id``), then mark the row done unless the job settled it. A
        job that waited in the queue for more than half the lease first renews it, and is
        skipped when another replica has taken it meanwhile."""
        inbox = self._inbox if owed_id is not None else None
        try:
            if (
                inbox is not None
                and owed_id is not None
                and time.monotonic() - queued > inbox.lease / 2
                and not inbox.renew(owed_id)
            ):
                log.info("[%s] owed work #%s was taken over by another replica", reference, owed_id)
                return
        except SQLAlchemyError as exc:
            log.warning("[%s] could not renew owed work #%s: %s", reference, owed_id, exc)
        settled = self.run(
            job.work,
            answer=job.answer,
            what=job.what,
            reference=reference,
            actor=job.actor,
            action=job.action,
        )
        if inbox is not None and owed_id is not None and not settled:
            try:
                inbox.done(owed_id)
            except SQLAlchemyError as exc:
                # owed still: replayed after the lease (a read answered twice, a click refused
                # as already decided), never lost
                log.warning("[%s] could not mark owed work #%s done: %s", reference, owed_id, exc)

    def submit(
        self,
        work: Callable[[], bool | None],
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
        self._start(
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
        work: Callable[[], bool | None],
        *,
        answer: Answer,
        what: str,
        reference: str,
        actor: str | None = None,
        action: str | None = None,
    ) -> bool:
        """Run ``work()`` here, answering its failure (what :meth:`submit` does on a worker).
        Returns True when ``work`` settled its inbox row itself, or found it already done."""
        # every line logged for the work carries them (bot/logs.py)
        with log_context(reference=reference, actor=actor, action=action):
            try:
                return bool(work())
            except AlreadyDone:
                log.info("[%s] %s was already done; not done twice", reference, what)
                return True
            except Exception as exc:  # noqa: BLE001 - every failure is answered, none escapes
                answer_safely(answer, failure_answer(exc, what, reference), reference)
                return False

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop taking work; with ``wait``, let what was handed off finish first."""
        self._pool.shutdown(wait=wait)
