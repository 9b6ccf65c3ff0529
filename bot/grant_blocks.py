"""Block Kit builders for access grants: pure functions, ``GrantView`` in, text/blocks out.

The reminder carries two buttons, Extend (``grant_extend``) and End now (``grant_end``), whose
``value`` is the grant ID and nothing else; the App Home view lists the user's grants with the
same buttons, their pending requests, and the requests waiting on their approval (with the
approval message's ``approve``/``deny`` buttons, ``value`` = the request ID).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from actions.durations import format_duration
from approvals.notifier import GrantView, RequestView
from approvals.paging import Page
from bot.blocks import (
    Blocks,
    button,
    context,
    decision_buttons,
    list_entry,
    page_note,
    past_the_end,
    section,
    title,
)
from bot.mrkdwn import escape, escape_composed

EXTEND_ACTION = "grant_extend"
END_ACTION = "grant_end"
GRANT_ACTIONS_BLOCK = "grant_actions"
HOME_DECISION_BLOCK = "home_decision"
HOME_MAX_ITEMS = 15
"""At most this many entries per App Home section: three sections of at most 15 entries of at
most two blocks, plus headers and a count line each, stay within the 100 blocks a view may hold
(Slack's limit for a Home tab)."""


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def clock_time(moment: datetime) -> str:
    """``2026-11-21 05:00 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def time_left(grant: GrantView, now: datetime) -> str:
    """``1h20m left``, or ``ending`` once the end has passed."""
    left = grant.seconds_left(now)
    return f"{format_duration(left, exact=False)} left" if left >= 1 else "ending"


def grant_title(grant: GrantView) -> str:
    """``Grant #12: edit in payments (prod)``, escaped for mrkdwn."""
    env = f" ({grant.environment})" if grant.environment else ""
    return escape(f"Grant #{grant.id}: {grant.role} in {grant.namespace}{env}")


def grant_line(grant: GrantView, now: datetime) -> str:
    """One line: who, what, where, and how long is left.

    ``*#12* <@U1> *edit* in *payments* (prod) as alice@example.com, Vault group prod-edit:
    ends 2026-11-21 05:00 UTC (1h20m left)``.
    """
    env = f" ({escape(grant.environment)})" if grant.environment else ""
    vault = f", Vault group {escape(grant.vault_group)}" if grant.vault_group else ""
    who = f"<@{grant.grantee_id}> " if grant.grantee_id else ""
    return (
        f"*#{grant.id}* {who}*{escape(grant.role)}* in *{escape(grant.namespace)}*{env} as "
        f"{escape(grant.kubernetes_user)}{vault}: ends {clock_time(grant.expires_at)} "
        f"({time_left(grant, now)})"
    )


def grant_buttons(grant: GrantView) -> dict[str, Any]:
    """An actions block: Extend and End now (with a confirmation), ``value`` = the grant ID."""
    end = button("End now", END_ACTION, str(grant.id), "danger")
    end["confirm"] = {
        "title": {"type": "plain_text", "text": "End this grant?"},
        "text": {
            "type": "mrkdwn",
            "text": f"{escape(grant.role)} in {escape(grant.namespace)} is removed at once.",
        },
        "confirm": {"type": "plain_text", "text": "End now"},
        "deny": {"type": "plain_text", "text": "Keep it"},
    }
    return {
        "type": "actions",
        "block_id": f"{GRANT_ACTIONS_BLOCK}_{grant.id}",
        "elements": [button("Extend", EXTEND_ACTION, str(grant.id), "primary"), end],
    }


def reminder_message(grant: GrantView, now: datetime) -> tuple[str, Blocks]:
    """The reminder before the end, to the grantee: time left, Extend and End now."""
    text = (
        f"{grant_title(grant)} ends in {format_duration(grant.seconds_left(now), exact=False)} "
        f"({clock_time(grant.expires_at)})"
    )
    limit = grant.extendable_by()
    room = (
        ""
        if limit is None
        else (
            f"It can be extended by at most {format_duration(limit, exact=False)}."
            if limit > 0
            else "It cannot be extended further (the rule's maximum is reached)."
        )
    )
    blocks: Blocks = [section(f":alarm_clock: *{text}*")]
    if room:
        blocks.append(context(room))
    blocks.append(grant_buttons(grant))
    return text, blocks


_NOTICE = {
    "started": ":key: {title} has started: *{role}* in *{namespace}* as {user}{vault}, "
    "until {end} ({duration}).",
    "extended": ":hourglass: {title} was extended: it now ends {end} ({left}).",
    "revoked": ":lock: {title} was ended early: {reason}.",
    "expired": ":lock: {title} has expired; the access is removed.",
    "drift_removed": ":warning: Drift: RoleBinding {namespace}/{binding} was removed ({reason}).",
}


_VAULT_DRIFT = (
    ":warning: Drift: Vault entity {entity} was removed from identity group {group} ({reason})."
)


def grant_notice(grant: GrantView, event: str, now: datetime) -> tuple[str, Blocks]:
    """What the grantee (or, for ``drift_removed``, the audit channel) is told about ``event``:
    ``started``, ``reminder``, ``extended``, ``revoked``, ``expired`` or ``drift_removed``."""
    if event == "reminder":
        return reminder_message(grant, now)
    template = _NOTICE.get(event, ":information_source: {title}: " + event + ".")
    if event == "drift_removed" and not grant.role_binding:
        template = _VAULT_DRIFT
    text = template.format(
        title=grant_title(grant),
        role=escape(grant.role),
        namespace=escape(grant.namespace),
        user=escape(grant.kubernetes_user),
        vault=f" and Vault group {escape(grant.vault_group)}" if grant.vault_group else "",
        end=clock_time(grant.expires_at),
        duration=format_duration(grant.duration_seconds, exact=False),
        left=time_left(grant, now),
        reason=escape_composed(grant.revoke_reason or "no reason given"),
        binding=escape(grant.role_binding),
        entity=escape(grant.vault_entity or "?"),
        group=escape(grant.vault_group or "?"),
    )
    blocks: Blocks = [section(text)]
    if event == "drift_removed" and grant.kube_context:
        blocks.append(context(f"kube context {escape(grant.kube_context)}"))
    if event in ("started", "extended"):
        blocks.append(grant_buttons(grant))
    return text, blocks


def grants_list(grants: Sequence[GrantView], now: datetime, *, everyone: bool = False) -> str:
    """``/ops grants``: one line per active grant (``everyone``: all of them, for approvers),
    each cut to :data:`~bot.blocks.LIST_ENTRY_LIMIT`; for a :class:`~approvals.paging.Page` of a
    longer list, which ones these are, of how many, and the command that shows the next page."""
    paged = grants if isinstance(grants, Page) else None
    if paged is not None and paged.total and not paged:
        return past_the_end(paged, "active grants")
    if not grants:
        return "There are no active grants." if everyone else "You have no active grants."
    head = "Active grants:" if everyone else "Your active grants:"
    lines = [head, *(list_entry(f"• {grant_line(g, now)}") for g in grants)]
    note = (
        page_note(paged, "active grants, the soonest to end first", "/ops grants") if paged else ""
    )
    return "\n".join([*lines, note] if note else lines)


def _request_line(view: RequestView) -> str:
    reason = f" — {escape(view.reason)}" if view.reason else ""
    return f"*{title(view)}*\nasked by <@{view.requester_id}>{reason}"


def _more(items: Sequence[Any], shown: int, what: str, where: str) -> dict[str, Any] | None:
    """A context line ``Showing 15 of 120 … ; `/ops grants` lists them all.`` when a section
    shows fewer than the whole list (``items`` a :class:`~approvals.paging.Page`, or a list)."""
    total = items.total if isinstance(items, Page) else len(items)
    if total <= shown:
        return None
    return context(f"Showing {shown:,} of {total:,} {what}; {where}.")


def home_view(
    grants: Sequence[GrantView],
    pending_requests: Sequence[RequestView],
    awaiting_my_approval: Sequence[RequestView],
    now: datetime,
) -> dict[str, Any]:
    """The App Home tab (``views.publish``): the user's active grants with time left and
    Extend / End now, their pending requests, and the requests waiting on their approval with
    Approve / Deny (``value`` = the request ID). Each section shows at most
    :data:`HOME_MAX_ITEMS` entries (the soonest to end, the oldest) and, when there are more
    (a :class:`~approvals.paging.Page` says how many), how many and where to see them."""
    blocks: Blocks = [_header("Your access grants")]
    shown = list(grants)[:HOME_MAX_ITEMS]
    if shown:
        for grant in shown:
            blocks.append(section(grant_line(grant, now)))
            blocks.append(grant_buttons(grant))
        more = _more(
            grants,
            len(shown),
            "active grants, the soonest to end",
            "`/ops grants` pages through them",
        )
        blocks.extend([more] if more else [])
    else:
        blocks.append(context("No active grants. Ask with `/ops access <namespace>`."))
    blocks.append({"type": "divider"})
    blocks.append(_header("Your pending requests"))
    mine = list(pending_requests)[:HOME_MAX_ITEMS]
    if mine:
        blocks.extend(section(_request_line(v)) for v in mine)
        more = _more(
            pending_requests,
            len(mine),
            "pending requests, the oldest",
            "`/ops status` pages through your requests",
        )
        blocks.extend([more] if more else [])
    else:
        blocks.append(context("Nothing pending."))
    waiting = list(awaiting_my_approval)[:HOME_MAX_ITEMS]
    if waiting:
        blocks.append({"type": "divider"})
        blocks.append(_header("Waiting on your approval"))
        for view in waiting:
            blocks.append(section(_request_line(view)))
            blocks.append(decision_buttons(view.id, f"{HOME_DECISION_BLOCK}_{view.id}"))
        more = _more(
            awaiting_my_approval,
            len(waiting),
            "requests waiting on you, the oldest",
            "the approval channel has them all",
        )
        blocks.extend([more] if more else [])
    blocks.append(context(f"Updated {clock_time(now)}"))
    return {"type": "home", "blocks": blocks[:100]}
