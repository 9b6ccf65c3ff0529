"""Slack listeners, one package per listener kind; each has ``register(app, gate)``."""

from __future__ import annotations

from slack_bolt import App

from approvals.gate import Gate
from bot.listeners import actions, commands, events


def register(app: App, gate: Gate) -> None:
    """Attach every listener to ``app``."""
    commands.register(app, gate)
    actions.register(app, gate)
    events.register(app, gate)
