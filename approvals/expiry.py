"""Waking revocations on time: APScheduler over the grants in the database.

The database decides what ends when (:class:`approvals.grants.GrantService`); the scheduler only
wakes the service at the right moments:

* two ``date`` jobs, whatever the number of grants: one at the soonest ``expires_at`` of the active
  grants that runs :meth:`GrantService.sweep`, one at the soonest reminder moment
  (``expires_at - reminder_before``) that runs :meth:`GrantService.remind_due`. After each run the
  job is set again from the database (:meth:`GrantService.next_expiry`,
  :meth:`GrantService.next_reminder`); activating or extending a grant only moves a job earlier.
  So 1,000 grants that end in the same second wake one sweep, not 1,000 (each would load, run and
  delete its own job, and sweep). The jobs live in memory: every start sets both again from
  the database, after a synchronous sweep that revokes whatever came due while the bot was down,
  so a stored copy would add nothing. Hence no per-instance job table (earlier versions kept one,
  ``opsgate_jobs_<instance>``, left behind by every pod that went away; migration 0009 drops
  them);
* a periodic sweep (every ``sweep_interval`` seconds: overdue grants, stale claims, reminders) and
  a periodic drift check (every ``drift_interval``), both also run once, synchronously, by
  :meth:`ExpiryScheduler.start`. So a grant whose job was lost is revoked at the next start or
  within ``sweep_interval`` seconds, whatever the job store holds;
* periodic callbacks of others (the gate's pending-request TTL), through :meth:`add_periodic`.

The wake-ups are textual references to module-level functions
(``approvals.expiry:fire_expiry``) with the instance name as argument; the function finds the live
scheduler, and through it the service, in the module-level registry :data:`_INSTANCES`, keyed by
the ``instance`` name given to the scheduler (``opsgate`` unless several bots share a process, as
tests do). Every replica sweeps the shared ``grants`` table, and each grant is claimed exactly
once, so replicas need no coordination and no table of their own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.jobstores.base import JobLookupError  # type: ignore[import-untyped]
from apscheduler.jobstores.memory import MemoryJobStore  # type: ignore[import-untyped]
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from approvals.db import make_engine
from approvals.grants import GrantService
from approvals.notifier import GrantView

log = logging.getLogger(__name__)

GRANT_STORE = "grants"
"""The persistent job store's alias; periodic jobs live in the in-memory ``default`` store."""

EXPIRY_JOB = "opsgate-next-expiry"
"""The persistent job that wakes the sweep at the soonest ``expires_at`` of the active grants."""

REMINDER_JOB = "opsgate-next-reminder"
"""The persistent job that wakes the reminders at the soonest reminder moment."""

_INSTANCES: dict[str, ExpiryScheduler] = {}
_INSTANCES_LOCK = threading.Lock()


class _SkippedPeriodicRun(logging.Filter):
    """APScheduler warns each time a periodic job is due while its previous run still goes on
    ("maximum number of running instances reached"). For opsgate's periodic jobs that is the
    intended behaviour (one run at a time; the next run catches up), not something to act on:
    such lines are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ('job "opsgate-' in message and "maximum number of running" in message)


logging.getLogger("apscheduler.scheduler").addFilter(_SkippedPeriodicRun())
SKEW_TOLERANCE = timedelta(seconds=1)
"""A wake-up the database puts further in the past than this (by the wall clock) is not set: the
service's clock is behind the wall clock (an injected one), and it would run again at once, in a
loop; the periodic sweep covers it."""


def fire_expiry(instance: str, grant_id: int | None = None) -> None:
    """Persistent job at the soonest ``expires_at``: sweep (which revokes every grant due), then
    set the job again at the next one. ``grant_id`` is that of a job stored by an earlier
    version (one job per grant)."""
    scheduler = _INSTANCES.get(instance)
    if scheduler is None:
        log.warning("expiry wake-up: scheduler %r is not running", instance)
        return
    scheduler._expiry_due()


def fire_reminder(instance: str, grant_id: int | None = None) -> None:
    """Persistent job at the soonest reminder moment: send every due reminder, then set the job
    again at the next one (``grant_id``: as for :func:`fire_expiry`)."""
    scheduler = _INSTANCES.get(instance)
    if scheduler is None:
        log.warning("reminder wake-up: scheduler %r is not running", instance)
        return
    scheduler._reminder_due()


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
                GRANT_STORE: MemoryJobStore(),
            },
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone=UTC,
        )
        self._wake_lock = threading.Lock()
        self._stopping = False
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
            func,
            "interval",
            seconds=seconds,
            id=name,
            name=name,
            jobstore="default",
            replace_existing=True,
        )

    def start(self) -> None:
        """Sweep overdue grants, send due reminders and check drift now, set the two wake-ups
        from the database, then start the clock.

        Raises ``RuntimeError`` if another scheduler of this ``instance`` name is running in this
        process.
        """
        with _INSTANCES_LOCK:
            other = _INSTANCES.get(self.instance)
            if other is not None and other is not self:
                raise RuntimeError(f"an expiry scheduler named {self.instance!r} is running")
            _INSTANCES[self.instance] = self
        began = time.monotonic()
        revoked = self.grants.sweep()
        if revoked:
            log.warning("revoked %d overdue grant(s) at start: %s", len(revoked), revoked[:20])
        self.grants.remind_due()
        self.grants.drift_check()
        self._stopping = False
        self._scheduler.start()
        self._wake_at(EXPIRY_JOB, "approvals.expiry:fire_expiry", self.grants.next_expiry)
        self._wake_at(REMINDER_JOB, "approvals.expiry:fire_reminder", self.grants.next_reminder)
        log.info(
            "expiry scheduler %r running: first sweep, reminders and drift check done in %.2f s",
            self.instance,
            time.monotonic() - began,
        )

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the scheduler (the next start sets the wake-ups again from the database)."""
        with self._wake_lock:
            self._stopping = True
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
        """Make sure the expiry wake-up (and, when the grant gets one, the reminder wake-up) comes
        no later than this grant needs: a job set later is moved earlier, one set earlier is left
        (when it runs, it is set again from the database). A grant already reminded needs no
        reminder wake-up."""
        try:
            self._wake_by(EXPIRY_JOB, "approvals.expiry:fire_expiry", grant.expires_at)
            if grant.reminded_at is None and grant.duration_seconds > self.grants.reminder_before:
                remind_at = grant.expires_at - timedelta(seconds=self.grants.reminder_before)
                self._wake_by(REMINDER_JOB, "approvals.expiry:fire_reminder", remind_at)
        except SQLAlchemyError as exc:  # the periodic sweep covers it
            log.error(
                "grant #%s: could not schedule its expiry (%s); the sweep will", grant.id, exc
            )

    def grant_ended(self, grant_id: int) -> None:
        """Nothing to forget: the wake-ups are shared by every grant, and one that finds nothing
        due only sets itself again from the database."""

    # --- the two wake-ups ---------------------------------------------------------------------

    def _wake_by(self, job_id: str, func: str, when: datetime) -> None:
        """Set job ``job_id`` to run at ``when`` unless it is already set to run by then."""
        with self._wake_lock:
            if self._stopping:
                return
            job = self._scheduler.get_job(job_id, jobstore=GRANT_STORE)
            if job is not None and job.next_run_time is not None and job.next_run_time <= when:
                return
            self._set(job_id, func, when)

    def _wake_at(self, job_id: str, func: str, when: Callable[[], datetime | None]) -> None:
        """Set job ``job_id`` to run at ``when()`` (read from the database under the same lock
        as :meth:`_wake_by`, so a grant activated meanwhile is never left without a wake-up), or
        remove it when nothing is ahead (or only a moment already past by the wall clock:
        see :data:`SKEW_TOLERANCE`).

        Called from a job's own thread too: once :meth:`shutdown` has begun (``_stopping``, set
        under the same lock) it does nothing, since the scheduler's ``shutdown(wait=True)`` holds
        the job store lock while it waits for running jobs. The next start sets it again.
        """
        try:
            with self._wake_lock:
                if self._stopping:
                    return
                at = when()
                if at is not None and at >= datetime.now(UTC) - SKEW_TOLERANCE:
                    self._set(job_id, func, at)
                    return
                with contextlib.suppress(JobLookupError):
                    self._scheduler.remove_job(job_id, jobstore=GRANT_STORE)
        except SQLAlchemyError as exc:  # the periodic sweep covers it
            log.error("could not set the wake-up %s (%s); the periodic sweep will", job_id, exc)

    def _set(self, job_id: str, func: str, run_date: datetime) -> None:
        self._scheduler.add_job(
            func,
            "date",
            args=[self.instance],
            id=job_id,
            name=job_id,
            jobstore=GRANT_STORE,
            replace_existing=True,
            run_date=run_date,
        )

    def _expiry_due(self) -> None:
        """The expiry wake-up: sweep, then wake again at the next ``expires_at``."""
        try:
            self.grants.sweep()
        finally:
            self._wake_at(EXPIRY_JOB, "approvals.expiry:fire_expiry", self.grants.next_expiry)

    def _reminder_due(self) -> None:
        """The reminder wake-up: send what is due, then wake again at the next reminder."""
        try:
            self.grants.remind_due()
        finally:
            self._wake_at(REMINDER_JOB, "approvals.expiry:fire_reminder", self.grants.next_reminder)

    def _periodic_sweep(self) -> None:
        self.grants.sweep()
        self.grants.remind_due()
