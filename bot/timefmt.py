"""How opsgate writes absolute times in Slack, the same way everywhere (durations:
:func:`actions.durations.format_duration`).

``slack_date`` uses Slack's date formatting
(``<!date^…>``, https://api.slack.com/reference/surfaces/formatting#date-formatting) so that each
reader sees the time in their own time zone, with a UTC fallback for clients that cannot.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc(moment: datetime) -> str:
    """``2026-11-21 05:00 UTC`` (plain text, for logs and fallbacks)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def slack_date(moment: datetime, token: str = "{date_short_pretty} {time}") -> str:
    """``<!date^1795240800^{date_short_pretty} {time}|2026-11-21 05:00 UTC>``: Slack shows it
    in the reader's time zone (``today 06:00``); ``token`` is Slack's format string."""
    return f"<!date^{int(moment.timestamp())}^{token}|{utc(moment)}>"
