"""The one injected clock of the tests."""

from __future__ import annotations

from datetime import UTC, datetime


class Clock:
    """An injected clock: aware UTC, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now
