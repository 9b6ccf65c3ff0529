"""``/ops extend <grant> <duration>``: more time on an active grant, as a request of its own.

An extension is decided by the rule that granted the access (its ``extend: auto | approval``) and,
once approved, moves the grant's ``expires_at`` through :class:`approvals.grants.GrantService`,
which keeps the total within the rule's ``max_duration``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from actions.access import rfc3339
from actions.base import Outcome, Preview, Target
from actions.durations import format_duration
from actions.errors import Conflict, Invalid, NotFound
from approvals.grants import GrantError, GrantService, extension_refusal
from approvals.lifecycle import SYSTEM, Actor


class ExtendParams(BaseModel):
    """The grant to extend (its ID is the ID of the access request) and by how many seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grant_id: int = Field(ge=1)
    seconds: int = Field(ge=1)


class Extend:
    """The ``extend`` request kind: previews the new end of a grant and moves it once approved.

    ``grants`` is the :class:`approvals.grants.GrantService` that owns the grant.
    """

    name: ClassVar[str] = "extend"
    reversible: ClassVar[bool] = True
    params_model: ClassVar[type[BaseModel]] = ExtendParams

    def __init__(self, *, grants: GrantService) -> None:
        self._grants = grants

    def preview(self, params: BaseModel, *, target: Target) -> Preview:
        """Check the grant is active and that the total stays within its ``max_duration``.

        Raises ``actions.errors.NotFound`` or ``Invalid`` with a message for the requester.
        """
        assert isinstance(params, ExtendParams)
        try:
            grant = self._grants.get(params.grant_id)
        except GrantError as exc:
            raise NotFound(str(exc)) from exc
        if grant.status != "active":
            raise Invalid(f"Grant #{grant.id} has already ended; ask for new access instead.")
        limit = grant.max_duration_seconds
        refusal = extension_refusal(grant.id, grant.duration_seconds, limit, params.seconds)
        if refusal is not None:
            raise Invalid(refusal)
        total = grant.duration_seconds + params.seconds
        new_end = grant.expires_at + timedelta(seconds=params.seconds)
        lines = (
            f"Extend grant *#{grant.id}* ({grant.role} in *{grant.namespace}* for "
            f"<@{grant.grantee_id}>) by {format_duration(params.seconds, exact=False)}",
            f"Ends at {rfc3339(grant.expires_at)} → {rfc3339(new_end)} "
            f"(total {format_duration(total, exact=False)}"
            + (f" of at most {format_duration(limit, exact=False)})" if limit is not None else ")"),
        )
        facts = {
            "grant_id": grant.id,
            "seconds": params.seconds,
            "expires_at": rfc3339(grant.expires_at),
            "new_expires_at": rfc3339(new_end),
        }
        return Preview(target=f"grant/{grant.id}", lines=lines, facts=facts)

    def execute(self, params: BaseModel, *, target: Target, preview: Preview) -> Outcome:
        """Move the grant's end (``GrantService.extend``). Raises ``actions.errors.Conflict``
        when the grant ended or changed meanwhile, ``Invalid`` beyond ``max_duration``."""
        assert isinstance(params, ExtendParams)
        try:
            requester = target.settings.get("requester_id")
            actor = Actor(str(requester)) if requester else SYSTEM
            grant = self._grants.extend(params.grant_id, params.seconds, actor=actor)
        except GrantError as exc:
            raise Conflict(str(exc)) from exc
        return Outcome(
            summary=(
                f"grant #{grant.id} extended by {format_duration(params.seconds, exact=False)}; "
                f"it now ends at {rfc3339(grant.expires_at)}"
            ),
            facts={"grant_id": grant.id, "expires_at": rfc3339(grant.expires_at)},
        )
