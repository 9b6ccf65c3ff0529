"""Slack listeners, one package per listener kind; each has ``register(app, gate, workers)``."""

from __future__ import annotations

from slack_bolt import App

from approvals.gate import Gate
from bot.listeners import actions, commands, events
from bot.work import Workers


def register(app: App, gate: Gate, workers: Workers) -> None:
    """Attach every listener to ``app``; their work runs on ``workers``."""
    commands.register(app, gate, workers)
    actions.register(app, gate, workers)
    events.register(app, gate, workers)
