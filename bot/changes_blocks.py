"""The answer to ``/ops changes``: what opsgate changed, newest first, one entry per request.

``• <when> #12 restart deployment/payments-api in payments (prod), asked by @dev, approved by
@sre: succeeded. restarted deployment/payments-api in payments (restartedAt …)``. Times use
Slack's date formatting (each reader sees their own time zone); everything a person typed is
escaped (:mod:`bot.mrkdwn`).
"""

from __future__ import annotations

from actions.durations import format_duration
from approvals.lifecycle import SYSTEM
from approvals.notifier import RequestView
from approvals.paging import Page
from bot.blocks import list_entry, page_note, past_the_end
from bot.mrkdwn import escape, escape_composed
from bot.timefmt import slack_date

_STATUS = {
    "executing": "executing now",
    "succeeded": "succeeded",
    "failed": "failed",
    "unknown": "may have taken effect (check before retrying)",
    "active": "access granted, active",
    "revoked": "access granted, then ended",
}


def change_entry(view: RequestView) -> str:
    """One change: when, what, who asked, who approved, and how it ended."""
    where = f" in {view.namespace}" if view.namespace else ""
    env = f" ({view.environment})" if view.environment else ""
    what = escape(f"{view.action} {view.target}{where}{env}")
    approvers = [f"<@{u}>" for u in view.approved_by]
    if view.decided_by == SYSTEM.id and not approvers:
        approved = "auto-approved by the policy"
    elif view.break_glass and not approvers:
        approved = "run at once with break-glass"
    else:
        approved = f"approved by {', '.join(approvers)}" if approvers else "approved"
    detail = view.result if view.status in ("succeeded", "active", "revoked") else view.error
    first_line = escape_composed(detail.splitlines()[0]) if detail else ""
    outcome = _STATUS.get(view.status, view.status)
    text = (
        f"• {slack_date(view.updated_at)} *#{view.id}* {what}, asked by <@{view.requester_id}>, "
        f"{approved}: {outcome}"
    )
    return list_entry(f"{text}. {first_line}" if first_line else f"{text}.")


def changes_list(page: Page[RequestView], since_seconds: int, scope: str) -> str:
    """The answer to ``/ops changes`` for one ``page``; ``scope`` says what was asked for
    (``in payments``, ``on web``, ``touched in this incident channel``; may be empty)."""
    window = format_duration(since_seconds, exact=False)
    if page.total and not page:
        return past_the_end(page, "changes")
    if not page:
        return f"opsgate changed nothing{scope} in the last {window} that you may see."
    lines = [f"*What opsgate changed{scope} in the last {window}*, newest first:"]
    lines += [change_entry(view) for view in page]
    note = page_note(page, "changes, newest first", "/ops changes")
    return "\n".join([*lines, note] if note else lines)
