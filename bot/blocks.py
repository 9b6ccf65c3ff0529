"""Block Kit builders: pure functions, domain objects in, ``(text, blocks)`` out.

No Slack client is ever used here. A button carries only the request ID (``value``); everything
else is read from the database when it is clicked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from approvals.lifecycle import SYSTEM
from approvals.notifier import RequestView
from approvals.paging import Page
from bot.mrkdwn import escape, escape_composed, unescape
from bot.timefmt import slack_date

Blocks = list[dict[str, Any]]

APPROVE_ACTION = "approve"
DENY_ACTION = "deny"
DECISION_BLOCK = "decision"
ACKNOWLEDGE_ACTION = "break_glass_ack"
REVIEW_BLOCK = "review"

_STATUS_EMOJI = {
    "pending": ":hourglass_flowing_sand:",
    "approved": ":white_check_mark:",
    "executing": ":gear:",
    "succeeded": ":white_check_mark:",
    "failed": ":x:",
    "unknown": ":warning:",
    "denied": ":no_entry:",
    "expired": ":alarm_clock:",
    "cancelled": ":heavy_multiplication_x:",
    "active": ":key:",
    "revoked": ":lock:",
}


def _fit(text: str, limit: int = 3000) -> str:
    """Slack refuses a text block over 3000 characters; a cut one says so."""
    cut = " … (cut)"
    return text if len(text) <= limit else text[: limit - len(cut)] + cut


def section(text: str) -> dict[str, Any]:
    """A mrkdwn section block, cut to Slack's 3000 characters (built and checked by
    ``slack_sdk.models.blocks``: a shape Slack would refuse raises
    ``SlackObjectFormationError`` here, not at Slack)."""
    return SectionBlock(text=MarkdownTextObject(text=_fit(text))).to_dict()


def context(text: str) -> dict[str, Any]:
    """A context block of one mrkdwn element, cut to Slack's 3000 characters."""
    return ContextBlock(elements=[MarkdownTextObject(text=_fit(text))]).to_dict()


def header(text: str) -> dict[str, Any]:
    """A header block (plain text, cut to Slack's 150 characters)."""
    return HeaderBlock(text=PlainTextObject(text=_fit(text, 150))).to_dict()


def divider() -> dict[str, Any]:
    """A divider block."""
    return DividerBlock().to_dict()


def button(
    text: str,
    action_id: str,
    value: str,
    style: str | None = None,
    confirm: ConfirmObject | None = None,
) -> ButtonElement:
    """A button element; ``value`` is an ID and nothing else."""
    return ButtonElement(text=text, action_id=action_id, value=value, style=style, confirm=confirm)


def actions(block_id: str, *elements: ButtonElement) -> dict[str, Any]:
    """An actions block of ``elements`` (at most 25, Slack's limit, checked)."""
    return ActionsBlock(block_id=block_id, elements=list(elements)).to_dict()


def decision_buttons(request_id: int, block_id: str = DECISION_BLOCK) -> dict[str, Any]:
    """An actions block with Approve and Deny, each with ``value`` = the request ID."""
    value = str(request_id)
    return actions(
        block_id,
        button("Approve", APPROVE_ACTION, value, "primary"),
        button("Deny", DENY_ACTION, value, "danger"),
    )


_ACCESS_TARGET = re.compile(r"^(?P<role>\S+) access to (?P<namespace>\S+)$")
"""The target ``actions.access`` writes (``view access to payments``)."""
_SCALE_LINE = re.compile(r"\*(?P<current>\d+) -> (?P<wanted>\d+)\* replicas")
"""The replica change in the first preview line ``actions.scale`` writes."""


def subject(view: RequestView) -> str:
    """What the request does, in plain words and plain text (not escaped):
    ``restart deployment/payments-api in payments (prod)``, ``access: view in payments (prod)``,
    ``scale statefulset/db 3 → 5 in payments (prod)``, ``rotate secret/payments/db``."""
    env = f" ({view.environment})" if view.environment else ""
    access = _ACCESS_TARGET.match(view.target) if view.action == "access" else None
    if access is not None:
        return f"access: {access['role']} in {access['namespace']}{env}"
    where = f" in {view.namespace}" if view.namespace else ""
    scale = view.action == "scale" and view.preview_lines
    replicas = _SCALE_LINE.search(view.preview_lines[0]) if scale else None
    if replicas is not None:
        change = f" {replicas['current']} → {replicas['wanted']}"
        return f"scale {view.target}{change}{where}{env}"
    return f"{view.action} {view.target}{where}{env}"


def title(view: RequestView) -> str:
    """``Request #12: restart deployment/payments-api in payments (prod)``, escaped for mrkdwn
    (the target and namespace may be what the requester typed)."""
    return escape(f"Request #{view.id}: {subject(view)}")


def _users(users: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"<@{u}>" for u in users)


def approvals_line(view: RequestView) -> str:
    """Who has approved so far and what is still needed, step by step.

    ``Needs 1 from *sre* (1/1: @a) and 1 from *security* (0/1)``.
    """
    if view.break_glass:
        return "Break-glass: executed without approval; needs review"
    if len(view.steps) <= 1:
        groups = escape(", ".join(view.approver_groups) or "nobody")
        got = len(view.approved_by)
        line = (
            f"Needs {view.min_approvals} approval(s) from *{groups}* ({got}/{view.min_approvals})"
        )
        if view.approved_by:
            line += ": approved by " + _users(view.approved_by)
        return line
    parts = []
    for step in view.steps:
        mark = ":white_check_mark: " if step.done else ""
        who = f": {_users(step.approved_by)}" if step.approved_by else ""
        parts.append(
            f"{mark}{step.min_approvals} from *{escape(', '.join(step.groups))}* "
            f"({len(step.approved_by)}/{step.min_approvals}{who})"
        )
    return "Needs " + " and ".join(parts)


def still_needed(view: RequestView) -> str:
    """``1 more from security``, or an empty string when every step is satisfied."""
    missing = [
        f"{step.min_approvals - len(step.approved_by)} more from {escape(', '.join(step.groups))}"
        for step in view.steps
        if not step.done
    ]
    return " and ".join(missing)


def outcome_line(view: RequestView) -> str:
    """One line saying where the request stands, who decided and what happened (``approved``
    and ``executing`` read the same: the request is running)."""
    emoji = _STATUS_EMOJI.get(view.status, "")
    by = f" by <@{view.decided_by}>" if view.decided_by not in (None, SYSTEM.id) else ""
    result = f": {escape_composed(view.result)}" if view.result else "."
    error = f": {escape_composed(view.error)}" if view.error else "."
    if view.status == "pending":
        return f"{emoji} Waiting for approval."
    if view.status in ("approved", "executing"):
        return f"{_STATUS_EMOJI['executing']} Approved{by}; running."
    if view.status == "succeeded":
        return f"{emoji} Approved{by}. Done{result}"
    if view.status == "failed":
        return f"{emoji} Approved{by}. *Failed*{error}"
    if view.status == "unknown":
        return f"{emoji} Approved{by}. *May have taken effect: check before retrying*{error}"
    if view.status == "denied":
        return f"{emoji} Denied{by}. Nothing was changed."
    if view.status == "cancelled":
        why = f": {escape_composed(view.error)}" if view.error else ""
        return f"{emoji} Cancelled{by}{why}. Nothing was changed."
    if view.status == "expired":
        return f"{emoji} Expired: nobody decided in time. Nothing was changed; ask again if needed."
    if view.status == "active":
        return f"{emoji} Approved{by}. Active{result}"
    if view.status == "revoked":
        ended = escape_composed(view.result or view.error or "revoked")
        return f"{emoji} Ended: {ended}"
    return f"{emoji} {view.status.capitalize()}{by}."


def preview(view: RequestView) -> str:
    """The preview lines (what the request changes), escaped for mrkdwn."""
    return "\n".join(escape_composed(line) for line in view.preview_lines) or "(no preview)"


def reason_line(label: str, reason: str | None) -> str:
    """``*Reason:* …`` with the reason escaped as typed, or ``(none given)``."""
    return f"*{label}:* {escape(reason) if reason else '(none given)'}"


def asked_by(view: RequestView, agent_name: str | None = None) -> str:
    """``<@U…>``, or for automation ``agent *deploy-bot* (<@U…>)`` (``agent_name``: its name
    in the policy's ``agents``), escaped."""
    if view.requester_kind == "agent":
        name = f" *{escape(agent_name)}*" if agent_name else ""
        return f"agent{name} (<@{view.requester_id}>)"
    return f"<@{view.requester_id}>"


def approval_message(view: RequestView, agent_name: str | None = None) -> tuple[str, Blocks]:
    """The approval request: who (an agent named by ``agent_name``), what (the preview), why,
    and Approve / Deny while pending.

    Whatever the requester typed (reason, names) is escaped: it can neither ping nor link."""
    text = f"{title(view)}, asked by {asked_by(view, agent_name)}"
    blocks: Blocks = [
        section(f"*{title(view)}*\nAsked by {asked_by(view, agent_name)}"),
        section(preview(view)),
        section(reason_line("Reason", view.reason)),
    ]
    if view.incident and view.origin_channel_id:
        name = f" (#{escape(view.incident_channel)})" if view.incident_channel else ""
        blocks.append(section(f"*Incident channel:* <#{view.origin_channel_id}>{name}"))
    footer = f"{approvals_line(view)} · rule {escape(view.rule or '?')}"
    if view.freeze:
        footer += f" · change freeze *{escape(view.freeze)}* in force"
    if view.status == "pending" and view.expires_at is not None:
        footer += f" · expires {slack_date(view.expires_at)}"
    blocks.append(context(footer))
    if view.status == "pending":
        blocks.append(decision_buttons(view.id))
    else:
        blocks.append(section(outcome_line(view)))
        text = f"{text}: {view.status}"
    return text, blocks


def requester_announcement(view: RequestView) -> str:
    """The requester's message as the request was filed: who asked what, and who must approve
    (or that policy approved it)."""
    base = f"<@{view.requester_id}> asked: {title(view)}"
    if view.break_glass:
        return f"{base}. :rotating_light: Break-glass: executing now, without approval."
    freeze = f" (change freeze {escape(view.freeze)})" if view.freeze else ""
    if view.needs_approval and len(view.steps) > 1:
        where = f" in <#{view.approval_channel}>" if view.approval_channel else ""
        return f"{base}. Waiting for {still_needed(view)}{where}{freeze}."
    if view.needs_approval:
        groups = escape(", ".join(view.approver_groups))
        where = f" in <#{view.approval_channel}>" if view.approval_channel else ""
        return f"{base}. Waiting for {view.min_approvals} approval(s) from {groups}{where}{freeze}."
    return f"{base}. Approved automatically by policy ({escape(view.rule or '?')})."


def requester_message(view: RequestView) -> str:
    """The requester's one message, as the request stands now (it is updated in place): the
    announcement while pending, then who approved and where it stands."""
    running = view.status in ("approved", "executing")
    if view.status == "pending" or (running and (view.break_glass or not view.needs_approval)):
        announcement = requester_announcement(view)
        if view.approved_by and view.status == "pending":
            announcement += f" {approvals_line(view)}."
        return announcement
    return f"<@{view.requester_id}> asked: {title(view)}\n{outcome_line(view)}"


def audit_line(view: RequestView) -> str:
    """The audit channel's one line for a request's final outcome: ``[audit] Request #12:
    restart … asked by <@U1>: ✅ Approved by <@U2>. Done: …``."""
    return f"[audit] {title(view)}, asked by <@{view.requester_id}>: {outcome_line(view)}"


def thread_update(view: RequestView, event: str, actor: str | None = None) -> str:
    """A thread reply for one change of the request."""
    if event == "approval_added":
        latest = view.approved_by[-1] if view.approved_by else actor
        needed = still_needed(view)
        rest = f"; still needed: {needed}" if needed else ""
        # with steps, an approval that no step needs (a second sre) does not count
        counted = (
            sum(len(step.approved_by) for step in view.steps)
            if view.steps
            else len(view.approved_by)
        )
        return f"<@{latest}> approved request #{view.id} ({counted}/{view.min_approvals}){rest}."
    if event == "escalated":
        mentions = [*(f"<!subteam^{s}>" for s in view.escalate_usergroups)]
        if view.escalate_users:
            mentions.append(_users(view.escalate_users))
        who = " ".join(mentions) or f"*{escape(view.escalate_to or '')}*"
        return (
            f":mega: {who}: request #{view.id} has waited since "
            f"{slack_date(view.created_at)} without a decision; "
            f"{approvals_line(view)}."
        )
    if event == "reviewed":
        return f"Break-glass request #{view.id} was reviewed by <@{view.reviewed_by}>."
    return f"Request #{view.id}: {outcome_line(view)}"


def break_glass_notice(view: RequestView) -> tuple[str, Blocks]:
    """The loud audit-channel notice of a break-glass request, with its review item: an
    Acknowledge button for the approvers until someone has reviewed it."""
    text = (
        f":rotating_light: BREAK-GLASS by <@{view.requester_id}>: {title(view)}, "
        f"executed without approval"
    )
    blocks: Blocks = [
        section(f"*{text}*"),
        section(preview(view)),
        section(reason_line("Justification", view.reason)),
        context(f"rule {escape(view.rule or '?')} · policy {str(view.policy_sha256 or '?')[:12]}"),
    ]
    if view.reviewed_by is None:
        groups = escape(", ".join(view.approver_groups) or "approvers")
        blocks.append(section(f"Needs review by *{groups}*; the request stays open until then."))
        blocks.append(
            actions(
                REVIEW_BLOCK, button("Acknowledge", ACKNOWLEDGE_ACTION, str(view.id), "primary")
            )
        )
    else:
        blocks.append(section(f":white_check_mark: Reviewed by <@{view.reviewed_by}>."))
        text += f" (reviewed by <@{view.reviewed_by}>)"
    return text, blocks


LIST_ENTRY_LIMIT = 500
"""Characters of one entry of a list answer at most (a long error is cut), so that a page of
entries stays far below the 40,000 characters Slack accepts in a message's text."""


def list_entry(text: str) -> str:
    """One entry of a list answer, cut to :data:`LIST_ENTRY_LIMIT` characters."""
    return _fit(text, LIST_ENTRY_LIMIT)


def page_note(page: Page[Any], what: str, command: str) -> str:
    """Where ``page`` stands in the whole list, and how to see the rest; empty when the list
    fits in one page. ``what`` names the items (``requests``), ``command`` is the slash command
    that lists them (``/ops status``).

    ``Showing 21 to 40 of 10,000 requests. Next: `/ops status --page 3` · previous:
    `/ops status --page 1`.``
    """
    if page.number == 1 and not page.more:
        return ""
    first, last = page.offset + 1, page.offset + len(page)
    hints = []
    if page.more:
        hints.append(f"Next: `{command} --page {page.number + 1}`")
    if page.number > 1:
        hints.append(f"previous: `{command} --page {page.number - 1}`")
    return f"Showing {first:,} to {last:,} of {page.total:,} {what}. " + " · ".join(hints) + "."


def past_the_end(page: Page[Any], what: str) -> str:
    """The answer for a page number past the end of the list."""
    return (
        f"There is no page {page.number:,}: the {page.total:,} {what} fill "
        f"{page.pages:,} page(s) of {page.size}."
    )


def status_list(views: Sequence[RequestView]) -> str:
    """The answer to ``/ops status``: each request's title and where it stands (each cut to
    :data:`LIST_ENTRY_LIMIT`); for a :class:`~approvals.paging.Page` of a longer list, which ones
    these are, of how many, and the command that shows the next page."""
    if isinstance(views, Page) and views.total and not views:
        return past_the_end(views, "requests")
    if not views:
        return "You have no requests yet. `/ops help` lists what you can ask for."
    lines = [list_entry(f"*{title(view)}*\n{outcome_line(view)}") for view in views]
    note = (
        page_note(views, "requests, newest first", "/ops status") if isinstance(views, Page) else ""
    )
    return "\n".join([*lines, note] if note else lines)


def error_message(text: str) -> str:
    """An error for one person: what was wrong (the text already says what to do). ``text`` is
    plain text (it may quote what they typed), escaped here for mrkdwn."""
    return f":warning: {escape_composed(text)}"


def checking(command_text: str) -> str:
    """The ack of a command that is being carried out: ``Checking `/ops restart …`…``.
    ``command_text`` is the command as Slack delivered it (escaped, see :mod:`bot.mrkdwn`)."""
    return f":hourglass_flowing_sand: Checking `/ops {escape(unescape(command_text))}`…"


def history_lines(lines: list[str]) -> str:
    """The answer to ``/ops history``: one line per revision (``actions.history``), escaped
    (a change-cause is whatever someone wrote in the annotation)."""
    return "\n".join(escape(line) for line in lines)
