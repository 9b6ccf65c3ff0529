"""The Slack side of :class:`approvals.notifier.Notifier`: posts, updates and thread replies."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.webhook import WebhookClient

from approvals.notifier import GrantView, MessageRef, NotifyError, OpenedRefs, RequestView
from approvals.policy import LoadedPolicy
from bot import autonomy_blocks, blocks, grant_blocks
from bot.mrkdwn import escape

log = logging.getLogger(__name__)

FINAL_EVENTS = frozenset(
    {"succeeded", "failed", "unknown", "denied", "cancelled", "expired", "active", "revoked"}
)
AUDITED_EVENTS = frozenset(
    {"approved", "denied", "cancelled", "succeeded", "failed", "unknown", "expired", "active"}
)
SLACK_FAILURES = (SlackApiError, SlackRequestError, OSError)
"""What a Web API call raises when Slack says no or cannot be reached (urllib's URLError)."""


def _slack_error(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "unknown_error"))
    return str(exc)


def _post(
    client: WebClient,
    what: str,
    *,
    channel: str,
    text: str,
    thread_ts: str | None = None,
    message_blocks: blocks.Blocks | None = None,
    level: int = logging.ERROR,
) -> MessageRef | None:
    """``chat.postMessage``; where the message went, or None after logging ``what`` failed."""
    try:
        response = client.chat_postMessage(
            channel=channel, text=text, thread_ts=thread_ts, blocks=message_blocks
        )
    except SLACK_FAILURES as exc:
        log.log(level, "%s failed: %s", what, _slack_error(exc))
        return None
    return MessageRef(str(response["channel"]), str(response["ts"]))


def _update(
    client: WebClient, what: str, ref: MessageRef, text: str, message_blocks: blocks.Blocks
) -> None:
    """``chat.update`` of the message at ``ref``; a failure is logged as ``what`` failed."""
    try:
        client.chat_update(channel=ref.channel_id, ts=ref.ts, text=text, blocks=message_blocks)
    except SLACK_FAILURES as exc:
        log.error("%s failed: %s", what, _slack_error(exc))


class SlackNotifier:
    """Tells Slack what the gate did.

    The approval message goes to the rule's approval channel and is updated in place
    (``chat.update``) as the request moves; progress goes to a thread under the requester's
    announcement, or through the command's ``response_url`` when the bot cannot post in that
    channel; decisions and results are mirrored to the policy's ``audit_channel``.
    """

    def __init__(self, client: WebClient, policy: Callable[[], LoadedPolicy]) -> None:
        self._client = client
        self._policy = policy

    def request_opened(
        self,
        request: RequestView,
        *,
        approval_posted: Callable[[MessageRef], None] | None = None,
        thread_posted: Callable[[MessageRef], None] | None = None,
    ) -> OpenedRefs:
        """Post the requester's announcement, then the approval message (if approval is needed).

        The announcement goes first and each ref is handed to its callback as soon as it exists,
        so that a click on the approval message always finds the thread to report to. Raises
        ``NotifyError`` when the approval message cannot be posted.
        """
        thread = self._announce(request)
        if thread is not None and thread_posted is not None:
            thread_posted(thread)
        approval: MessageRef | None = None
        if request.needs_approval and request.approval_channel is not None:
            text, message_blocks = blocks.approval_message(request, self._agent_name(request))
            try:
                response = self._client.chat_postMessage(
                    channel=request.approval_channel, text=text, blocks=message_blocks
                )
            except SLACK_FAILURES as exc:
                # plain text: the gate quotes it in answers and records, which bot/ escapes
                raise NotifyError(
                    f"posting to channel {request.approval_channel} failed: {_slack_error(exc)}"
                ) from exc
            approval = MessageRef(str(response["channel"]), str(response["ts"]))
            if approval_posted is not None:
                approval_posted(approval)
        return OpenedRefs(approval=approval, thread=thread)

    def _announce(self, request: RequestView) -> MessageRef | None:
        text = blocks.requester_announcement(request)
        if request.origin_channel_id:
            try:
                response = self._client.chat_postMessage(
                    channel=request.origin_channel_id, text=text
                )
                return MessageRef(str(response["channel"]), str(response["ts"]))
            except SLACK_FAILURES as exc:
                log.info(
                    "request #%s: cannot post in %s (%s); answering through response_url",
                    request.id,
                    request.origin_channel_id,
                    _slack_error(exc),
                )
        self._respond(request, text)
        return None

    def review_opened(self, request: RequestView) -> MessageRef | None:
        """Post the loud break-glass notice, with its Acknowledge button, to the audit channel;
        where that fails (or the policy has none), to the approval channel. Returns where, or
        None when neither took it."""
        policy = self._policy().policy
        channels = [policy.audit_channel, request.approval_channel, policy.approval_channel]
        text, message_blocks = blocks.break_glass_notice(request)
        for channel in dict.fromkeys(c for c in channels if c):
            ref = _post(
                self._client,
                f"request #{request.id}: break-glass notice to {channel}",
                channel=channel,
                text=text,
                message_blocks=message_blocks,
            )
            if ref is not None:
                return ref
        return None

    def request_changed(self, request: RequestView, *, event: str) -> None:
        """Update the approval message, reply in the thread and mirror to the audit channel.

        Raises ``NotifyError`` only when the requester could not be told at all.
        """
        if request.review is not None:
            text, message_blocks = blocks.break_glass_notice(request)
            what = f"request #{request.id}: review update"
            _update(self._client, what, request.review, text, message_blocks)
        if event == "reviewed":
            return
        if event == "autonomy":  # approved on earned autonomy: the notice with its Undo button
            self._autonomy_notice(request)
            return
        self.card_changed(request)
        update = blocks.thread_update(request, event)
        if event == "escalated":
            self._escalate(request, update)
            return
        if event in FINAL_EVENTS:
            update = f"<@{request.requester_id}> {update}"
        self._tell_requester(request, update)
        if event in AUDITED_EVENTS:
            self._mirror_to_audit(request, update)

    def card_changed(self, request: RequestView) -> None:
        """Update the approval message (``chat.update``), if it has been posted, to show
        ``request`` as it is now. A failure is logged, never raised."""
        if request.approval is not None:
            text, message_blocks = blocks.approval_message(request, self._agent_name(request))
            what = f"request #{request.id}: chat.update"
            _update(self._client, what, request.approval, text, message_blocks)

    def _escalate(self, request: RequestView, text: str) -> None:
        """Ping the escalation group in the approval message's thread (and the requester's)."""
        if request.approval is not None:
            _post(
                self._client,
                f"request #{request.id}: escalation",
                channel=request.approval.channel_id,
                thread_ts=request.approval.ts,
                text=text,
            )
        if request.thread is not None:
            _post(
                self._client,
                f"request #{request.id}: escalation reply",
                channel=request.thread.channel_id,
                thread_ts=request.thread.ts,
                text=text,
                level=logging.WARNING,
            )

    def _autonomy_notice(self, request: RequestView) -> None:
        """Post the earned-autonomy notice, with Undo, to the approval channel; a failure is
        logged (the request is approved and audited whatever happens to its notice)."""
        channel = request.approval_channel or self._policy().policy.approval_channel
        text, message_blocks = autonomy_blocks.autonomy_notice(request, self._agent_name(request))
        what = f"request #{request.id}: earned-autonomy notice"
        _post(self._client, what, channel=channel, text=text, message_blocks=message_blocks)

    def _agent_name(self, request: RequestView) -> str | None:
        """The requester's name in the policy's ``agents``, or None."""
        agent = self._policy().policy.agents.get(request.requester_id)
        return agent.name if agent is not None else None

    def _tell_requester(self, request: RequestView, text: str) -> None:
        if request.thread is None and not request.response_url and not request.origin_channel_id:
            return  # asked through the HTTP API: its requester reads the status there
        if request.thread is not None and _post(
            self._client,
            f"request #{request.id}: thread reply",
            channel=request.thread.channel_id,
            thread_ts=request.thread.ts,
            text=text,
            level=logging.WARNING,
        ):
            return
        if not self._respond(request, text):
            raise NotifyError(f"request #{request.id}: the requester could not be told")

    def _respond(self, request: RequestView, text: str) -> bool:
        """Answer the requester alone through the command's response_url; False if that failed."""
        if not request.response_url:
            return False
        try:
            response = WebhookClient(request.response_url).send(
                text=text, response_type="ephemeral", replace_original=False
            )
        except OSError as exc:
            log.warning("request #%s: response_url failed: %s", request.id, exc)
            return False
        if response.status_code != 200:
            log.warning("request #%s: response_url answered %s", request.id, response.status_code)
            return False
        return True

    def _mirror_to_audit(self, request: RequestView, text: str) -> None:
        channel = self._policy().policy.audit_channel
        if channel is not None:
            what = f"request #{request.id}: audit channel post"
            _post(self._client, what, channel=channel, text=f"[audit] {text}")


GRANT_AUDITED = frozenset({"started", "extended", "revoked", "expired", "drift_removed"})
GRANT_ENDED = frozenset({"revoked", "expired", "drift_removed"})

AUDIT_SUMMARY_LINES = 40
"""Grants per audit summary message (far under Slack's 40,000 characters of text)."""


class SlackGrantNotifier:
    """Tells a grantee, in a direct message, what happens to their grant (started, reminder with
    Extend / End now, extended, revoked, expired), and mirrors every change to the policy's
    ``audit_channel``. Implements :class:`approvals.notifier.GrantNotifier`."""

    def __init__(
        self,
        client: WebClient,
        policy: Callable[[], LoadedPolicy],
        clock: Callable[[], datetime],
        on_change: Callable[[str], None] | None = None,
        on_ended: Callable[[GrantView], None] | None = None,
    ) -> None:
        self._client = client
        self._policy = policy
        self._clock = clock
        self._on_change = on_change
        self._on_ended = on_ended
        self._batch = threading.local()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Within the block (this thread), the audit lines of the grants that end are kept, then
        posted as one summary per :data:`AUDIT_SUMMARY_LINES` grants: when 1,000 grants end
        together, the audit channel gets 25 messages, not 1,000 (the grantees are still told
        one by one)."""
        lines: list[str] = []
        self._batch.lines = lines
        try:
            yield
        finally:
            self._batch.lines = None
            self._post_summary(lines)

    def _post_summary(self, lines: list[str]) -> None:
        channel = self._policy().policy.audit_channel
        if channel is None or not lines:
            return
        if len(lines) == 1:
            _post(self._client, "audit post", channel=channel, text=f"[audit] {lines[0]}")
            return
        parts = [
            lines[i : i + AUDIT_SUMMARY_LINES] for i in range(0, len(lines), AUDIT_SUMMARY_LINES)
        ]
        for number, part in enumerate(parts, start=1):
            of = f" ({number}/{len(parts)})" if len(parts) > 1 else ""
            text = f"[audit] {len(lines)} grants ended together{of}:\n" + "\n".join(
                f"• {line}" for line in part
            )
            _post(self._client, f"audit summary of {len(lines)} grants", channel=channel, text=text)

    def grant_changed(self, grant: GrantView, *, event: str) -> None:
        """Deliver ``event`` for ``grant``. Raises ``NotifyError`` when the grantee could not be
        told (the audit mirror's failure is only logged)."""
        text, message_blocks = grant_blocks.grant_notice(grant, event, self._clock())
        told = True
        if grant.grantee_id:
            told = None is not _post(
                self._client,
                f"grant #{grant.id}: telling the grantee",
                channel=grant.grantee_id,
                text=text,
                message_blocks=message_blocks,
            )
        batched: list[str] | None = getattr(self._batch, "lines", None)
        if event in GRANT_ENDED and batched is not None:
            batched.append(text)  # summed up when the batch ends (see batch)
        elif event in GRANT_AUDITED:
            channel = self._policy().policy.audit_channel
            if channel is not None:
                what = f"grant #{grant.id}: audit post"
                _post(self._client, what, channel=channel, text=f"[audit] {text}")
        if self._on_ended is not None and event in GRANT_ENDED and grant.grantee_id:
            self._on_ended(grant)
        if self._on_change is not None and grant.grantee_id:
            self._on_change(grant.grantee_id)
        if not told:
            raise NotifyError(f"grant #{grant.id}: the grantee could not be told")

    def policy_reload_failed(self, error: str) -> None:
        """Report a policy reload that kept the previous policy in force to the audit channel."""
        loaded = self._policy()
        _post(
            self._client,
            "reporting the invalid policy",
            channel=loaded.policy.audit_channel or loaded.policy.approval_channel,
            text=(
                ":warning: The policy file changed but is invalid; the previous policy stays "
                f"in force (sha256 {loaded.sha256[:12]}).\n```{escape(error[:2500])}```"
            ),
        )
