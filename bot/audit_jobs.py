"""The audit trail's periodic jobs in ``opsgate serve``: delivery to the webhook sink (when
``OPSGATE_AUDIT_WEBHOOK_URL`` is set) and the daily anchor, the chain's head posted to the
policy's audit channel so that a chain rewritten entirely, hashes included, no longer matches
what the channel shows (``opsgate audit verify --anchor SEQ:HASH``)."""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.orm import Session, sessionmaker

from approvals.audit_chain import head
from approvals.audit_sink import WebhookSink
from approvals.expiry import ExpiryScheduler
from approvals.policy_store import PolicyStore
from bot.settings import Settings

log = logging.getLogger(__name__)

ANCHOR_INTERVAL = 86400.0
"""Seconds between two posts of the chain's head to the audit channel."""


def add_audit_jobs(
    scheduler: ExpiryScheduler,
    sessions: sessionmaker[Session],
    settings: Settings,
    client: WebClient,
    store: PolicyStore,
) -> WebhookSink | None:
    """Schedule the anchor and, when configured, the webhook sink; returns the sink or None."""

    scheduler.add_periodic(
        "opsgate-audit-anchor", lambda: post_anchor(sessions, client, store), ANCHOR_INTERVAL
    )
    if settings.audit_webhook_url is None:
        return None
    secret = settings.audit_webhook_secret
    sink = WebhookSink(
        sessions,
        settings.audit_webhook_url,
        secret.get_secret_value().encode() if secret is not None else b"",
        fmt=settings.audit_webhook_format,
    )
    scheduler.add_periodic("opsgate-audit-sink", sink.deliver_due, settings.audit_webhook_interval)
    return sink


def post_anchor(sessions: sessionmaker[Session], client: WebClient, store: PolicyStore) -> bool:
    """Post the chain's head (seq and hash) to the policy's audit channel; returns whether it
    was posted (not when no event was written yet, no audit channel is set, or Slack refused)."""
    with sessions() as session:
        seq, digest = head(session.connection())
    channel = store.current().policy.audit_channel
    if seq == 0 or channel is None:
        return False
    try:
        client.chat_postMessage(
            channel=channel,
            text=(
                f"Audit chain head: seq {seq}, sha256 `{digest}`. Check the trail with "
                f"`opsgate audit verify --anchor {seq}:{digest}`."
            ),
        )
    except SlackApiError as exc:
        log.warning("audit anchor: posting to %s failed: %s", channel, exc.response["error"])
        return False
    return True
