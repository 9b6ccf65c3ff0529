"""The reading room: a request as someone may see it, pages of requests, rollout histories.

Nothing here changes anything. A request is shown to its requester, the people who may approve it
and the policy's ``audit_readers``, and to no one else: to them it does not exist
(:meth:`Reading.get_for`). Lists are pages read with ``LIMIT``/``OFFSET`` and a ``COUNT``
(:mod:`approvals.paging`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from actions.errors import ActionError
from approvals.gate.context import GateContext
from approvals.gate.errors import Rejected, UnknownRequest
from approvals.gate.views import lists_approver, page_of
from approvals.lifecycle import Actor
from approvals.models import ActorKind, Request, Status
from approvals.notifier import RequestView
from approvals.paging import Page
from approvals.policy import NamespaceError, resolve_environment, step_members

log = logging.getLogger(__name__)

History = Callable[[str | None, str, str], list[str]]
"""The rollout history of a Deployment as lines: (kubeconfig context, namespace, name)."""


class Reading:
    """Requests as their viewers may see them; ``history`` reads a Deployment's rollout
    history (None: not offered here)."""

    def __init__(self, ctx: GateContext, history: History | None) -> None:
        self._ctx = ctx
        self._history = history

    def get_for(self, request_id: int, viewer: Actor) -> RequestView:
        """Request ``request_id`` as :meth:`get` gives it, if ``viewer`` may see it: its requester
        (automation sees only its own requests), the people who may approve it (its stored
        approvers, those who decided it, and the current members of its approver groups) and
        the members of the policy's ``audit_readers`` groups.

        Raises :class:`UnknownRequest` with the same message for a request ``viewer`` may not
        see as for one that does not exist, so that an ID's existence is not given away.
        """
        loaded = self._ctx.policy()
        viewer = self._ctx.actor(viewer, loaded)
        hidden = UnknownRequest(f"There is no request #{request_id}.")
        with self._ctx.sessions() as session:
            request = session.get(Request, request_id)
            if request is None:
                raise hidden
            stored: dict[str, Any] = dict(request.approvers)
        view = self._ctx.get(request_id)
        if viewer.id == view.requester_id:
            return view
        if viewer.kind == ActorKind.AGENT:
            raise hidden
        people = {*stored.get("users", []), *view.approved_by, view.decided_by, view.reviewed_by}
        if viewer.id in people:
            return view
        groups = {
            *stored.get("groups", []),
            *(g for step in stored.get("steps", []) for g in step["groups"]),
            *loaded.policy.audit_readers,
        }
        if viewer.id in step_members(groups, self._ctx.groups(loaded), loaded.policy.agents):
            return view
        if self._ctx.directory is not None:  # someone just added to a Slack user group
            self._ctx.directory.refresh()
            if viewer.id in step_members(groups, self._ctx.groups(loaded), loaded.policy.agents):
                return view
        log.info("request #%s: not shown to %s, who may not see it", request_id, viewer.id)
        raise hidden

    def pending_for(self, approver_id: str, *, page: int, size: int) -> Page[RequestView]:
        """Page ``page`` of the pending requests that ``approver_id`` may approve (not their
        own), oldest first, with how many there are: three queries (a ``COUNT``, the page, its
        approvals). Raises ``ValueError`` for a page out of range."""
        with self._ctx.sessions() as session:
            where = [
                Request.status == Status.PENDING.value,
                Request.requester_id != approver_id,
                lists_approver(session, approver_id),
            ]
            return page_of(session, where, Request.id, page, size)

    def pending_of(self, requester_id: str, *, page: int, size: int) -> Page[RequestView]:
        """Page ``page`` of ``requester_id``'s pending requests, oldest first, with how many
        there are (three queries). Raises ``ValueError`` for a page out of range."""
        with self._ctx.sessions() as session:
            where = [Request.status == Status.PENDING.value, Request.requester_id == requester_id]
            return page_of(session, where, Request.id, page, size)

    def latest(self, *, requester_id: str, limit: int, page: int) -> Page[RequestView]:
        """Page ``page`` (``limit`` per page) of ``requester_id``'s requests, newest first, with
        how many there are (three queries). Raises ``ValueError`` for a page out of range."""
        with self._ctx.sessions() as session:
            where = [Request.requester_id == requester_id]
            return page_of(session, where, Request.id.desc(), page, limit)

    def history(self, namespace: str, env: str | None, name: str) -> list[str]:
        """The rollout history of Deployment ``name`` in ``namespace``, as lines for Slack.

        Answered without approval, to anyone, for a namespace the policy places in an
        environment. Raises :class:`Rejected` for an unknown namespace or Deployment.
        """
        policy = self._ctx.policy().policy
        try:
            environment = resolve_environment(policy, namespace, env)
        except NamespaceError as exc:
            raise Rejected(str(exc)) from exc
        if self._history is None:
            raise Rejected("opsgate cannot read rollout histories here")
        try:
            return self._history(policy.environments[environment].kube_context, namespace, name)
        except ActionError as exc:
            raise Rejected(str(exc)) from exc
