"""Block Kit builders: pure functions, domain objects in, ``(text, blocks)`` out.

No Slack client is ever used here. A button carries only the request ID (``value``); everything
else is read from the database when it is clicked.
"""

from __future__ import annotations

from typing import Any

from approvals.lifecycle import SYSTEM
from approvals.notifier import RequestView

Blocks = list[dict[str, Any]]

APPROVE_ACTION = "approve"
DENY_ACTION = "deny"
DECISION_BLOCK = "decision"

_STATUS_EMOJI = {
    "pending": ":hourglass_flowing_sand:",
    "approved": ":white_check_mark:",
    "executing": ":gear:",
    "succeeded": ":white_check_mark:",
    "failed": ":x:",
    "denied": ":no_entry:",
    "expired": ":alarm_clock:",
    "cancelled": ":heavy_multiplication_x:",
}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def title(view: RequestView) -> str:
    """``Request #12: restart deployment/payments-api in payments (prod)``."""
    where = f" in {view.namespace}" if view.namespace else ""
    env = f" ({view.environment})" if view.environment else ""
    return f"Request #{view.id}: {view.action} {view.target}{where}{env}"


def _approvals_line(view: RequestView) -> str:
    groups = ", ".join(view.approver_groups) or "nobody"
    got = len(view.approved_by)
    line = f"Needs {view.min_approvals} approval(s) from *{groups}* ({got}/{view.min_approvals})"
    if view.approved_by:
        line += ": approved by " + ", ".join(f"<@{u}>" for u in view.approved_by)
    return line


def outcome_line(view: RequestView) -> str:
    """One line saying where the request stands, who decided and what happened."""
    emoji = _STATUS_EMOJI.get(view.status, "")
    by = f" by <@{view.decided_by}>" if view.decided_by not in (None, SYSTEM.id) else ""
    if view.status == "pending":
        return f"{emoji} Waiting for approval."
    if view.status == "approved":
        return f"{emoji} Approved{by}; executing next."
    if view.status == "executing":
        return f"{emoji} Approved{by}; executing now."
    if view.status == "succeeded":
        return f"{emoji} Approved{by}. Done: {view.result}"
    if view.status == "failed":
        return f"{emoji} Approved{by}. *Failed*: {view.error}"
    if view.status == "denied":
        return f"{emoji} Denied{by}. Nothing was changed."
    if view.status == "cancelled":
        why = f": {view.error}" if view.error else ""
        return f"{emoji} Cancelled{by}{why}. Nothing was changed."
    return f"{emoji} {view.status.capitalize()}{by}."


def approval_message(view: RequestView) -> tuple[str, Blocks]:
    """The approval request: who, what (the preview), why, and Approve / Deny while pending."""
    text = f"{title(view)}, asked by <@{view.requester_id}>"
    blocks: Blocks = [
        _section(f"*{title(view)}*\nAsked by <@{view.requester_id}>"),
        _section("\n".join(view.preview_lines) or "(no preview)"),
        _section(f"*Reason:* {view.reason}" if view.reason else "*Reason:* (none given)"),
    ]
    if view.incident and view.origin_channel_id:
        blocks.append(_section(f"*Incident channel:* <#{view.origin_channel_id}>"))
    context = f"{_approvals_line(view)} · rule {view.rule or '?'}"
    blocks.append(_context(context))
    if view.status == "pending":
        blocks.append(
            {
                "type": "actions",
                "block_id": DECISION_BLOCK,
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE_ACTION,
                        "text": {"type": "plain_text", "text": "Approve"},
                        "style": "primary",
                        "value": str(view.id),
                    },
                    {
                        "type": "button",
                        "action_id": DENY_ACTION,
                        "text": {"type": "plain_text", "text": "Deny"},
                        "style": "danger",
                        "value": str(view.id),
                    },
                ],
            }
        )
    else:
        blocks.append(_section(outcome_line(view)))
        text = f"{text}: {view.status}"
    return text, blocks


def requester_announcement(view: RequestView) -> str:
    """The message in the requester's channel whose thread carries progress and results."""
    base = f"<@{view.requester_id}> asked: {title(view)}"
    if view.needs_approval:
        groups = ", ".join(view.approver_groups)
        where = f" in <#{view.approval.channel_id}>" if view.approval else ""
        return f"{base}. Waiting for {view.min_approvals} approval(s) from {groups}{where}."
    return f"{base}. Approved automatically by policy ({view.rule})."


def thread_update(view: RequestView, event: str, actor: str | None = None) -> str:
    """A thread reply for one change of the request."""
    if event == "approval_added":
        latest = view.approved_by[-1] if view.approved_by else actor
        return (
            f"<@{latest}> approved request #{view.id} "
            f"({len(view.approved_by)}/{view.min_approvals})."
        )
    return f"Request #{view.id}: {outcome_line(view)}"


def status_list(views: list[RequestView]) -> str:
    """The answer to ``/ops status``: each request's title and where it stands."""
    if not views:
        return "You have no requests yet. `/ops help` lists what you can ask for."
    return "\n".join(f"*{title(view)}*\n{outcome_line(view)}" for view in views)


def error_message(text: str) -> str:
    """An error for one person: what was wrong (the text already says what to do)."""
    return f":warning: {text}"
