"""How opsgate writes durations and absolute times in Slack, the same way everywhere.

``duration`` is for people (``1h 30m``); ``slack_date`` uses Slack's date formatting
(``<!date^…>``, https://api.slack.com/reference/surfaces/formatting#date-formatting) so that each
reader sees the time in their own time zone, with a UTC fallback for clients that cannot.
"""

from __future__ import annotations

from datetime import UTC, datetime


def duration(seconds: float) -> str:
    """``5400`` → ``1h 30m``; ``90061`` → ``1d 1h 1m``; seconds are shown only under an hour
    (``45s``, ``2m 5s``); ``0`` (or less) → ``0s``. ``seconds`` is rounded down."""
    left = max(int(seconds), 0)
    units = (("d", 86400), ("h", 3600), ("m", 60)) + ((("s", 1),) if left < 3600 else ())
    parts = []
    for unit, size in units:
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts) or "0s"


def utc(moment: datetime) -> str:
    """``2026-11-21 05:00 UTC`` (plain text, for logs and fallbacks)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def slack_date(moment: datetime, token: str = "{date_short_pretty} {time}") -> str:
    """``<!date^1795240800^{date_short_pretty} {time}|2026-11-21 05:00 UTC>``: Slack shows it
    in the reader's time zone (``today 06:00``); ``token`` is Slack's format string."""
    return f"<!date^{int(moment.timestamp())}^{token}|{utc(moment)}>"
