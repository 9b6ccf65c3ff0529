"""Bearer tokens for the HTTP API: created, listed, revoked, and checked on every call.

A token is ``ogt_`` followed by 43 URL-safe characters (:func:`secrets.token_urlsafe` of 32
bytes); it is shown once, when created, and only its SHA-256 is stored. The ``ogt_`` prefix makes
a leaked token recognizable (secret scanners, logs). A token acts as its subject: an agent the
policy lists under ``agents`` (the request is then decided with ``requester_kind: agent``), or
a person's Slack user ID. Every use is audited (an ``api_call`` audit event); a revoked or
expired token is refused with :class:`TokenRefused`.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from approvals.lifecycle import Actor
from approvals.models import ActorKind, ApiToken, AuditEvent

log = logging.getLogger(__name__)

PREFIX = "ogt_"
"""The start of every opsgate API token."""

SHOWN = 10
"""How many characters of a token ``opsgate token list`` shows (the prefix included)."""


class TokenError(ValueError):
    """A token cannot be created or revoked as asked; ``str()`` says why."""


class TokenRefused(Exception):
    """The bearer token is missing, unknown, revoked or expired; ``str()`` says which (never
    the token itself)."""


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: never its value. Times are aware UTC datetimes."""

    id: int
    prefix: str
    subject_id: str
    subject_kind: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime) -> str:
        """``active``, ``revoked`` or ``expired`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    @property
    def actor(self) -> Actor:
        """Who the token acts as."""
        kind = ActorKind.AGENT if self.subject_kind == ActorKind.AGENT else ActorKind.HUMAN
        return Actor(self.subject_id, kind)


def digest(token: str) -> str:
    """The SHA-256 of ``token`` as 64 hex digits: what is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        prefix=row.prefix,
        subject_id=row.subject_id,
        subject_kind=row.subject_kind,
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class TokenStore:
    """The API tokens in the database. ``clock`` returns an aware UTC datetime."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self._sessions = sessions
        self._clock = clock

    def create(
        self, *, subject_id: str, subject_kind: str, name: str, expires_in: int | None = None
    ) -> tuple[str, TokenInfo]:
        """A new token for ``subject_id`` (``subject_kind`` ``agent`` or ``human``) that expires
        ``expires_in`` seconds from now (None: never); returns the token, shown only now, and
        its record. Raises :class:`TokenError` for a non-positive ``expires_in``."""
        if expires_in is not None and expires_in <= 0:
            raise TokenError("a token's lifetime must be positive")
        if subject_kind not in (ActorKind.AGENT, ActorKind.HUMAN):
            raise TokenError(f"a token acts as an agent or a person, not '{subject_kind}'")
        token = PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        with self._sessions.begin() as session:
            row = ApiToken(
                token_sha256=digest(token),
                prefix=token[:SHOWN],
                subject_id=subject_id,
                subject_kind=str(subject_kind),
                name=name,
                created_at=now,
                expires_at=None if expires_in is None else now + timedelta(seconds=expires_in),
            )
            session.add(row)
            session.flush()
            info = _info(row)
        log.info("API token #%s created for %s %s (%s)", info.id, subject_kind, subject_id, name)
        return token, info

    def list(self) -> list[TokenInfo]:
        """Every token, newest first."""
        with self._sessions() as session:
            rows = session.scalars(select(ApiToken).order_by(ApiToken.id.desc())).all()
            return [_info(row) for row in rows]

    def revoke(self, token_id: int) -> TokenInfo:
        """Revoke token ``token_id`` now (revoking it again changes nothing). Raises
        :class:`TokenError` when there is no such token."""
        with self._sessions.begin() as session:
            row = session.get(ApiToken, token_id)
            if row is None:
                raise TokenError(f"there is no token #{token_id}")
            if row.revoked_at is None:
                row.revoked_at = self._clock()
                log.info("API token #%s (%s) revoked", token_id, row.name)
            return _info(row)

    def audit_use(self, actor: Actor, detail: dict[str, Any]) -> None:
        """Record a call authenticated otherwise than by an opsgate token (a ServiceAccount
        token checked with a TokenReview) as an ``api_call`` audit event."""
        with self._sessions.begin() as session:
            session.add(
                AuditEvent(
                    event="api_call",
                    actor_id=actor.id,
                    actor_kind=str(actor.kind),
                    detail=detail,
                    created_at=self._clock(),
                )
            )

    def authenticate(self, token: str, *, method: str, path: str) -> TokenInfo:
        """The token ``token`` stands for, if it may be used now; records the use (``last_used_at``
        and an ``api_call`` audit event with ``method`` and ``path``) in one transaction.

        Raises :class:`TokenRefused` for a token that is malformed, unknown, revoked or expired
        (a known token's refusal is audited too, as ``api_token_refused``).
        """
        if not token.startswith(PREFIX) or len(token) > 200:
            raise TokenRefused("not an opsgate token (they start with ogt_)")
        now = self._clock()
        with self._sessions.begin() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest(token)))
            if row is None:
                raise TokenRefused("unknown token")
            info = _info(row)
            state = info.state(now)
            detail: dict[str, Any] = {"token_id": info.id, "method": method, "path": path}
            if state != "active":
                detail["refused"] = state
            session.add(
                AuditEvent(
                    event="api_call" if state == "active" else "api_token_refused",
                    actor_id=info.subject_id,
                    actor_kind=info.subject_kind,
                    detail=detail,
                    created_at=now,
                )
            )
            if state == "active":
                session.execute(
                    update(ApiToken).where(ApiToken.id == info.id).values(last_used_at=now)
                )
        if state != "active":
            raise TokenRefused(f"token #{info.id} is {state}")
        return info
