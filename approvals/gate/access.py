"""The access room: the gate's front to the grants service (:mod:`approvals.grants`).

Who may see and end grants is decided here, from the policy's access rules; the grants service
does the ending. When a grant ends, the service tells its subscribers
(:meth:`~approvals.grants.GrantService.subscribe`): :meth:`Access.grant_ended` shows it on the
access request's approval message and in its requester's thread.
"""

from __future__ import annotations

from approvals.gate.context import GateContext
from approvals.gate.errors import AlreadyDecided, NotAllowed, UnknownRequest
from approvals.grants import GrantError, GrantView
from approvals.lifecycle import Actor
from approvals.models import ActorKind, Request, Status
from approvals.paging import PAGE_SIZE, Page


class Access:
    """Grants as the gate offers them: listing, ending early, and their ends on requests."""

    def __init__(self, ctx: GateContext) -> None:
        self._ctx = ctx

    def grant_approvers(self) -> frozenset[str]:
        """Everyone who may approve some access request: they see and may end every grant."""
        loaded = self._ctx.policy()
        groups = self._ctx.groups(loaded)
        names: set[str] = set()
        for rule in loaded.policy.rules:
            if "access" in rule.match.action:
                names.update(rule.approvers)
                for step in rule.steps or ():
                    names.update(step.approvers)
        return frozenset(u for name in names for u in groups.get(name, frozenset()))

    def active_grants(
        self, user_id: str, *, page: int = 1, size: int = PAGE_SIZE
    ) -> tuple[Page[GrantView], bool]:
        """Page ``page`` of ``user_id``'s active grants, or of every active grant when they
        approve grants (the flag says which), the soonest to end first, with how many there are.
        Raises ``ValueError`` for a page out of range."""
        if self._ctx.grants is None:
            return Page((), 0, page, size), False
        everyone = user_id in self.grant_approvers()
        return self._ctx.grants.active(
            None if everyone else user_id, page=page, size=size
        ), everyone

    def revoke_grant(self, grant_id: int, actor: Actor, *, reason: str | None = None) -> GrantView:
        """End grant ``grant_id`` now: its grantee or an approver may, without approval.

        Raises :class:`UnknownRequest` or :class:`NotAllowed`.
        """
        actor = self._ctx.actor(actor)
        if self._ctx.grants is None:
            raise UnknownRequest(f"There is no grant #{grant_id}.")
        try:
            grant = self._ctx.grants.get(grant_id)
        except GrantError as exc:
            raise UnknownRequest(str(exc)) from exc
        if actor.kind == ActorKind.AGENT and grant.grantee_id != actor.id:
            raise NotAllowed("Automation can only end its own grants.")
        if (
            grant.grantee_id != actor.id
            and actor.id not in grant.approver_ids  # an approver of its request
            and actor.id not in self.grant_approvers()
        ):
            raise NotAllowed(
                f"Only the grantee or an approver may end grant #{grant_id}; nothing changed."
            )
        why = reason or ("ended early by its grantee" if grant.grantee_id == actor.id else None)
        try:
            return self._ctx.grants.revoke(grant_id, actor=actor, reason=why)
        except GrantError as exc:
            raise AlreadyDecided(str(exc)) from exc

    def grant_ended(self, grant_id: int, why: str) -> None:
        """Show on the access request that its grant ended (``why``: expired, revoked early by
        …): the approval message is updated and the requester's thread told."""
        with self._ctx.sessions.begin() as session:
            request = session.get(Request, grant_id)
            if request is None or request.status != Status.REVOKED.value:
                return
            request.result = f"access ended: {why}"
        self._ctx.notify(grant_id, "revoked")
