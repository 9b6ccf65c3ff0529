"""Block Kit of earned autonomy: the notice of a request an agent's autonomy let through, with
its "Undo / require approval again" button, and the notice once someone clicked it."""

from __future__ import annotations

from approvals.notifier import RequestView
from bot.blocks import (
    Blocks,
    actions,
    asked_by,
    button,
    context,
    preview,
    reason_line,
    section,
    title,
)
from bot.mrkdwn import escape

UNDO_ACTION = "autonomy_undo"
"""The Undo button; its value is the request's ID."""


def autonomy_notice(view: RequestView, agent_name: str | None) -> tuple[str, Blocks]:
    """The notice posted to the approval channel when a request went through on earned
    autonomy (``agent_name``: the agent's name in the policy)."""
    text = (
        f":robot_face: {title(view)}, asked by {asked_by(view, agent_name)}, was approved on "
        "earned autonomy (no human was asked)"
    )
    blocks: Blocks = [
        section(text),
        section(preview(view)),
        section(reason_line("Reason", view.reason)),
        context(f"rule {escape(view.rule or '?')} · undo to require approval again"),
        actions(
            "autonomy",
            button("Undo / require approval again", UNDO_ACTION, str(view.id), "danger"),
        ),
    ]
    return text, blocks


def autonomy_undone(view: RequestView, agent_name: str | None, by: str) -> tuple[str, Blocks]:
    """The notice once ``by`` (a Slack user ID) took the agent's autonomy back."""
    text, blocks = autonomy_notice(view, agent_name)
    done = (
        f":lock: <@{by}> took this autonomy back: {asked_by(view, agent_name)} needs approval "
        f"again under rule {escape(view.rule or '?')}."
    )
    return f"{text}. {done}", [*blocks[:-1], section(done)]
