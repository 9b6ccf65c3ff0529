"""Waking revocations on time: APScheduler over the grants in the database.

The database decides what ends when (:class:`approvals.grants.GrantService`); the scheduler only
wakes the service at the right moments:

* one ``date`` job per grant at ``expires_at`` that runs :meth:`GrantService.sweep`, and one at
  ``expires_at - reminder_before`` that runs :meth:`GrantService.remind_due`. They live in a
  ``SQLAlchemyJobStore`` on the bot's own database, so a restarted bot still has them; with
  ``coalesce`` and no ``misfire_grace_time`` a job missed while the bot was down runs as soon as it
  is back;
* a periodic sweep (every ``sweep_interval`` seconds: overdue grants, stale claims, reminders) and
  a periodic drift check (every ``drift_interval``), both also run once, synchronously, by
  :meth:`ExpiryScheduler.start`. So a grant whose job was lost is revoked at the next start or
  within ``sweep_interval`` seconds, whatever the job store holds;
* periodic callbacks of others (the gate's pending-request TTL), through :meth:`add_periodic`.

Persistent jobs must survive the process: they are stored as the textual reference of a
module-level function (``approvals.expiry:fire_expiry``) with JSON-simple arguments (the instance
name and the grant ID). The function finds the live scheduler, and through it the service, in the
module-level registry :data:`_INSTANCES`, keyed by the ``instance`` name given to the scheduler
(``opsgate`` unless several bots share a database). Each instance keeps its jobs in a table of its
own (``opsgate_jobs_<instance>``), because APScheduler 3 does not support two schedulers on one
job store (its documentation warns of duplicate and missed runs); the jobs of an instance that
never comes back are covered by the other instances' sweeps, which select from the shared
``grants`` table and claim each grant exactly once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.jobstores.base import JobLookupError  # type: ignore[import-untyped]
from apscheduler.jobstores.memory import MemoryJobStore  # type: ignore[import-untyped]
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # type: ignore[import-untyped]
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from approvals.db import make_engine
from approvals.grants import GrantService
from approvals.notifier import GrantView

log = logging.getLogger(__name__)

GRANT_STORE = "grants"
"""The persistent job store's alias; periodic jobs live in the in-memory ``default`` store."""

_INSTANCES: dict[str, ExpiryScheduler] = {}
_INSTANCES_LOCK = threading.Lock()
_IN_JOB = threading.local()
"""Set while a scheduler job runs: its thread must not call back into the scheduler, whose
``shutdown(wait=True)`` holds the job store lock while it waits for running jobs."""


def _as_job(func: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        _IN_JOB.active = True
        try:
            func()
        finally:
            _IN_JOB.active = False

    return run


def fire_expiry(instance: str, grant_id: int) -> None:
    """Persistent job at a grant's ``expires_at``: sweep (which revokes it, and any other due)."""
    scheduler = _INSTANCES.get(instance)
    if scheduler is None:
        log.warning("expiry of grant #%s: scheduler %r is not running", grant_id, instance)
        return
    _as_job(scheduler.grants.sweep)()


def fire_reminder(instance: str, grant_id: int) -> None:
    """Persistent job ``reminder_before`` seconds before a grant ends: send due reminders."""
    scheduler = _INSTANCES.get(instance)
    if scheduler is None:
        log.warning("reminder of grant #%s: scheduler %r is not running", grant_id, instance)
        return
    _as_job(scheduler.grants.remind_due)()


STORE_RETRY_SECONDS = 5.0
"""Seconds before the scheduler reads its job table again after the database failed it."""


class _SharedJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """The grants' job table, shared by every scheduler of the same instance name (replicas of
    ``opsgate serve`` on one host name, say).

    APScheduler 3 calls ``get_next_run_time``, ``update_job`` and ``remove_job`` from its
    scheduler thread without catching what they raise, so one failure ends that thread for good
    and no grant would be revoked on time again. Here none of them raises: a job another
    scheduler already removed (each may run a job: a sweep, idempotent) is only logged; a
    database that cannot be reached is logged, and the table is read again after
    :data:`STORE_RETRY_SECONDS` (a job whose update or removal failed runs again: the sweeps
    are idempotent, and the periodic sweep revokes what is overdue in any case)."""

    def get_next_run_time(self) -> datetime | None:
        try:
            next_run: datetime | None = super().get_next_run_time()
        except SQLAlchemyError as exc:
            log.warning(
                "the scheduler's job table cannot be read (%s); trying again in %.0f s",
                type(exc).__name__,
                STORE_RETRY_SECONDS,
            )
            return datetime.now(UTC) + timedelta(seconds=STORE_RETRY_SECONDS)
        return next_run

    def update_job(self, job: Any) -> None:
        try:
            super().update_job(job)
        except JobLookupError:
            log.debug("job %s was already removed by another scheduler", job.id)
        except SQLAlchemyError as exc:
            log.warning("job %s could not be updated (%s)", job.id, type(exc).__name__)

    def remove_job(self, job_id: str) -> None:
        try:
            super().remove_job(job_id)
        except JobLookupError:
            log.debug("job %s was already removed by another scheduler", job_id)
        except SQLAlchemyError as exc:
            log.warning("job %s could not be removed (%s)", job_id, type(exc).__name__)


class ExpiryScheduler:
    """APScheduler wiring for :class:`GrantService`; attaches itself to ``grants``.

    ``engine_or_url`` is the bot's database (its engine, or a URL for a new one). ``clock`` is the
    service's clock (run dates are wall-clock UTC; what is due is decided by the service with its
    clock). ``sweep_interval`` and ``drift_interval`` are seconds; ``reminder_before`` (seconds)
    defaults to the service's. ``instance`` names this bot among those sharing the database.
    """

    def __init__(
        self,
        engine_or_url: Engine | str,
        *,
        grants: GrantService,
        clock: Callable[[], datetime],
        sweep_interval: float = 30.0,
        drift_interval: float = 300.0,
        reminder_before: float | None = None,
        instance: str = "opsgate",
        workers: int = 4,
    ) -> None:
        if isinstance(engine_or_url, str):
            self._engine = make_engine(engine_or_url)
            self._owns_engine = True
        else:
            self._engine = engine_or_url
            self._owns_engine = False
        self.grants = grants
        self.instance = instance
        self._clock = clock
        if reminder_before is not None:
            grants.reminder_before = reminder_before
        self._scheduler = BackgroundScheduler(
            jobstores={
                "default": MemoryJobStore(),
                GRANT_STORE: _SharedJobStore(
                    engine=self._engine, tablename=f"opsgate_jobs_{instance}"
                ),
            },
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone=UTC,
        )
        self.add_periodic("opsgate-grant-sweep", self._periodic_sweep, sweep_interval)
        self.add_periodic("opsgate-drift-check", self.grants.drift_check, drift_interval)
        grants.attach(self)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def add_periodic(self, name: str, func: Callable[[], object], seconds: float) -> None:
        """Run ``func()`` every ``seconds`` (in memory: add it again at each start). A second call
        with the same ``name`` replaces the first."""
        self._scheduler.add_job(
            _as_job(func),
            "interval",
            seconds=seconds,
            id=name,
            name=name,
            jobstore="default",
            replace_existing=True,
        )

    def start(self) -> None:
        """Sweep overdue grants, send due reminders and check drift now, then start the clock.

        Raises ``RuntimeError`` if another scheduler of this ``instance`` name is running in this
        process.
        """
        with _INSTANCES_LOCK:
            other = _INSTANCES.get(self.instance)
            if other is not None and other is not self:
                raise RuntimeError(f"an expiry scheduler named {self.instance!r} is running")
            _INSTANCES[self.instance] = self
        revoked = self.grants.sweep()
        if revoked:
            log.warning("revoked %d overdue grant(s) at start: %s", len(revoked), revoked[:20])
        self.grants.remind_due()
        self.grants.drift_check()
        self._scheduler.start()

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the scheduler (jobs in the database stay for the next start)."""
        if self._scheduler.running:
            # APScheduler 3 marks itself stopped before it takes the job store lock, so a pass
            # over due jobs still running then fails to remove the jobs it ran (JobLookupError
            # kills its thread). Pause first, and let the current pass finish under the lock.
            self._scheduler.pause()
            with self._scheduler._jobstores_lock:
                pass
            self._scheduler.shutdown(wait=wait)
        with _INSTANCES_LOCK:
            if _INSTANCES.get(self.instance) is self:
                del _INSTANCES[self.instance]
        if self._owns_engine:
            self._engine.dispose()

    # --- GrantScheduling ----------------------------------------------------------------------

    def grant_scheduled(self, grant: GrantView) -> None:
        """(Re)schedule the expiry job and, when it is still ahead, the reminder job."""
        try:
            self._add(
                f"grant-{grant.id}-expiry", "approvals.expiry:fire_expiry", grant, grant.expires_at
            )
            remind_at = grant.expires_at - timedelta(seconds=self.grants.reminder_before)
            if grant.duration_seconds > self.grants.reminder_before:
                self._add(
                    f"grant-{grant.id}-reminder", "approvals.expiry:fire_reminder", grant, remind_at
                )
        except SQLAlchemyError as exc:  # the periodic sweep covers it
            log.error(
                "grant #%s: could not schedule its expiry (%s); the sweep will", grant.id, exc
            )

    def grant_ended(self, grant_id: int) -> None:
        """Remove the grant's jobs (those already run are gone already).

        Skipped inside a scheduler job (a sweep): a leftover job only wakes a sweep that finds
        nothing to do, while calling into the scheduler from its own job could deadlock with
        ``shutdown``.
        """
        if getattr(_IN_JOB, "active", False):
            return
        for job_id in (f"grant-{grant_id}-expiry", f"grant-{grant_id}-reminder"):
            try:
                self._scheduler.remove_job(job_id, jobstore=GRANT_STORE)
            except JobLookupError:
                pass
            except SQLAlchemyError as exc:
                log.warning("grant #%s: could not remove job %s: %s", grant_id, job_id, exc)

    def _add(self, job_id: str, func: str, grant: GrantView, run_date: datetime) -> None:
        kwargs: dict[str, Any] = {"run_date": run_date}
        self._scheduler.add_job(
            func,
            "date",
            args=[self.instance, grant.id],
            id=job_id,
            name=job_id,
            jobstore=GRANT_STORE,
            replace_existing=True,
            **kwargs,
        )

    def _periodic_sweep(self) -> None:
        self.grants.sweep()
        self.grants.remind_due()
