"""Block Kit builders for access grants: pure functions, ``GrantView`` in, text/blocks out.

The reminder carries two buttons, Extend (``grant_extend``) and End now (``grant_end``), whose
``value`` is the grant ID and nothing else; the App Home view lists the user's grants with the
same buttons, their pending requests, and the requests waiting on their approval (with the
approval message's ``approve``/``deny`` buttons, ``value`` = the request ID).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import ButtonElement, ConfirmObject, MarkdownTextObject
from slack_sdk.models.views import View

from actions.durations import format_duration
from approvals.notifier import GrantView, RequestView
from approvals.paging import Page
from bot.blocks import (
    DENY_ACTION,
    Blocks,
    actions,
    button,
    context,
    decision_buttons,
    divider,
    header,
    list_entry,
    outcome_line,
    page_note,
    past_the_end,
    section,
    title,
)
from bot.mrkdwn import escape, escape_composed
from bot.timefmt import slack_date

EXTEND_ACTION = "grant_extend"
END_ACTION = "grant_end"
GRANT_ACTIONS_BLOCK = "grant_actions"
HOME_DECISION_BLOCK = "home_decision"
HOME_PAGE_ACTION = "home_page"
HOME_NAV_BLOCK = "home_nav"
HOME_CANCEL_BLOCK = "home_cancel"
HOME_MAX_ITEMS = 10
"""At most this many entries per App Home section and page: what waits on you (two blocks each),
your pending requests (one), your grants (two) and your last 10 requests (one section) stay,
with headers, dividers and count lines, well within the 100 blocks a Home tab may hold."""


def clock_time(moment: datetime) -> str:
    """Slack date formatting: each reader sees ``moment`` in their own time zone
    (:func:`bot.timefmt.slack_date`)."""
    return slack_date(moment)


def time_left(grant: GrantView, now: datetime) -> str:
    """``1h20m left``, or ``ending`` once the end has passed."""
    left = grant.seconds_left(now)
    return f"{format_duration(left, exact=False)} left" if left >= 1 else "ending"


def grant_title(grant: GrantView) -> str:
    """``Grant #12: access: edit in payments (prod) for 1h as alice@example.com``, escaped for
    mrkdwn."""
    env = f" ({grant.environment})" if grant.environment else ""
    return escape(
        f"Grant #{grant.id}: access: {grant.role} in {grant.namespace}{env} for "
        f"{format_duration(grant.duration_seconds)} as {grant.kubernetes_user}"
    )


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
    confirm = ConfirmObject(
        title="End this grant?",
        text=MarkdownTextObject(
            text=f"{escape(grant.role)} in {escape(grant.namespace)} is removed at once."
        ),
        confirm="End now",
        deny="Keep it",
    )
    return actions(
        f"{GRANT_ACTIONS_BLOCK}_{grant.id}",
        button("Extend", EXTEND_ACTION, str(grant.id), "primary"),
        button("End now", END_ACTION, str(grant.id), "danger", confirm),
    )


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
    "started": ":key: {title} has started{vault}: it ends {end}.",
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
        vault=f" (with Vault group {escape(grant.vault_group)})" if grant.vault_group else "",
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


def cancel_button(request_id: int) -> ButtonElement:
    """Cancel on the requester's own pending request: the ``deny`` action (a requester's Deny
    withdraws their request, ``cancelled``), with a confirmation; ``value`` = the request ID."""
    confirm = ConfirmObject(
        title="Cancel this request?",
        text=f"Request #{request_id} is withdrawn; nothing is changed.",
        confirm="Cancel it",
        deny="Keep it",
    )
    return button("Cancel", DENY_ACTION, str(request_id), None, confirm)


def _more(items: Sequence[Any], shown: int, what: str, where: str) -> dict[str, Any] | None:
    """A context line ``Showing 10 of 120 … ; `/ops grants` pages through them.`` when a section
    shows fewer than the whole list (``items`` a :class:`~approvals.paging.Page`, or a list)."""
    total = items.total if isinstance(items, Page) else len(items)
    if total <= shown:
        return None
    return context(f"Showing {shown:,} of {total:,} {what}; {where}.")


def _waiting_section(waiting: Sequence[RequestView]) -> Blocks:
    """What waits on the user's approval, with Approve / Deny, and the page buttons when the
    list is longer than a page (``waiting`` a :class:`~approvals.paging.Page`)."""
    blocks: Blocks = [header("Waiting on your approval")]
    if not waiting:
        return [*blocks, context("Nothing waits on you.")]
    shown = list(waiting)[:HOME_MAX_ITEMS]
    for view in shown:
        blocks.append(section(_request_line(view)))
        blocks.append(decision_buttons(view.id, f"{HOME_DECISION_BLOCK}_{view.id}"))
    if isinstance(waiting, Page) and (waiting.total > len(shown) or waiting.number > 1):
        first, last = waiting.offset + 1, waiting.offset + len(shown)
        blocks.append(
            context(
                f"Showing {first:,} to {last:,} of {waiting.total:,} requests waiting on you, "
                "oldest first."
            )
        )
        nav = []
        if waiting.number > 1:
            nav.append(button("Previous", f"{HOME_PAGE_ACTION}_prev", str(waiting.number - 1)))
        if waiting.more:
            nav.append(button("Next", f"{HOME_PAGE_ACTION}_next", str(waiting.number + 1)))
        blocks.append(actions(HOME_NAV_BLOCK, *nav))
    return blocks


def _grants_section(grants: Sequence[GrantView], now: datetime) -> Blocks:
    blocks: Blocks = [header("Your access grants")]
    shown = list(grants)[:HOME_MAX_ITEMS]
    if not shown:
        return [*blocks, context("No active grants. Ask with `/ops access <namespace>`.")]
    for grant in shown:
        blocks.append(section(grant_line(grant, now)))
        blocks.append(grant_buttons(grant))
    more = _more(
        grants, len(shown), "active grants, the soonest to end", "`/ops grants` pages through them"
    )
    return blocks + ([more] if more else [])


def _pending_section(pending: Sequence[RequestView]) -> Blocks:
    blocks: Blocks = [header("Your pending requests")]
    mine = list(pending)[:HOME_MAX_ITEMS]
    if not mine:
        return [*blocks, context("Nothing pending.")]
    for view in mine:
        blocks.append(section(_request_line(view)))
        blocks.append(actions(f"{HOME_CANCEL_BLOCK}_{view.id}", cancel_button(view.id)))
    more = _more(
        pending,
        len(mine),
        "pending requests, the oldest",
        "`/ops status` pages through your requests",
    )
    return blocks + ([more] if more else [])


def _recent_section(recent: Sequence[RequestView]) -> Blocks:
    lines = [
        list_entry(f"*{title(v)}*\n{outcome_line(v)}")[:280] for v in list(recent)[:HOME_MAX_ITEMS]
    ]
    body = section("\n".join(lines)) if lines else context("You have not asked for anything yet.")
    return [header("Your last 10 requests"), body]


def home_view(
    grants: Sequence[GrantView],
    pending_requests: Sequence[RequestView],
    awaiting_my_approval: Sequence[RequestView],
    now: datetime,
    recent: Sequence[RequestView] = (),
) -> dict[str, Any]:
    """The App Home tab (``views.publish``): the requests waiting on the user's approval with
    Approve / Deny (``value`` = the request ID) and Previous / Next page buttons
    (``home_page_prev`` / ``home_page_next``, ``value`` = the page number) when they do not fit;
    the user's pending requests with Cancel (``deny``, which withdraws one's own request); their
    active grants with time left and Extend / End now; and
    their last 10 requests. Each section shows at most :data:`HOME_MAX_ITEMS` entries and, when
    there are more (a :class:`~approvals.paging.Page` says how many), how many and where to see
    them. Built and checked by ``slack_sdk.models.views.View`` (at most 100 blocks)."""
    blocks: Blocks = [
        *_waiting_section(awaiting_my_approval),
        divider(),
        *_pending_section(pending_requests),
        divider(),
        *_grants_section(grants, now),
        divider(),
        *_recent_section(recent),
        context(f"Updated {clock_time(now)}"),
    ]
    return View(type="home", blocks=blocks).to_dict()
