"""The one injected clock of the tests."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

from tests.helpers.bot import wait_for

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
MONOTONIC_AT_START = 1000.0


class Clock:
    """The clock given to the code under test: an aware UTC datetime that moves only when the
    test moves it (from any thread: the running bot reads it from its own).

    * ``clock()`` is the time now (every ``clock=`` parameter of opsgate takes a clock so);
      each reading is counted by the name of the function that read it (for :meth:`move_to`);
    * ``clock.now`` reads or sets the time; :meth:`advance` moves it on by seconds;
    * :meth:`sleep` advances instead of waiting and records the seconds in ``sleeps`` (for a
      ``sleep=`` parameter);
    * :meth:`monotonic` is a count of seconds (``float``, 1000.0 at the start) that moves with
      the time, for a ``Callable[[], float]`` clock such as the user-group directory's;
    * :meth:`move_to` sets the time and waits for a periodic job of the running bot to have run
      at the new time.

    ``now`` defaults to 2026-11-21 03:00 UTC (:data:`T0`).
    """

    def __init__(self, now: datetime = T0) -> None:
        self._now = now
        self._start = now
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        caller = sys._getframe(1).f_code.co_name
        with self._lock:
            self._calls[caller] += 1
            return self._now

    @property
    def now(self) -> datetime:
        with self._lock:
            return self._now

    @now.setter
    def now(self, when: datetime) -> None:
        with self._lock:
            self._now = when

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        """What ``time.sleep(seconds)`` would do, at once: the clock moves on ``seconds``."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += timedelta(seconds=seconds)

    def monotonic(self) -> float:
        """Seconds, as ``time.monotonic()`` counts them: 1000.0 at the start, then with the
        time (moving the time backwards moves it backwards too: a test never does)."""
        with self._lock:
            return MONOTONIC_AT_START + (self._now - self._start).total_seconds()

    def move_to(self, when: datetime, *, then_run: str) -> None:
        """Set the time to ``when``, then wait until the periodic job whose gate method is
        ``then_run`` (``escalate_due``, ``expire_pending``) has run to the end at that time.

        A job never overlaps itself (``max_instances=1``), so once it has read the clock twice
        after the change, its first run at the new time has finished. Fails the test after 15 s.
        """
        with self._lock:
            self._now = when
            seen = self._calls[then_run]
        wait_for(
            lambda: self._calls[then_run] >= seen + 2,
            what=f"{then_run} to run at {when.isoformat()}",
        )
