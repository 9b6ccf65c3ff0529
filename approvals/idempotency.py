"""``Idempotency-Key`` for filing requests: a retry with the same key gets the first request.

The key is claimed (a row with no request yet) before the request is filed, in its own
transaction, under a unique constraint on (caller, key): of two calls racing with one key, one
files and the other is told the first is still being handled (:class:`KeyInFlight`). A key is
kept :data:`KEY_TTL` seconds; a claim left without a request for :data:`STALE_CLAIM` seconds (the
process stopped mid-way) may be taken over. Semantics as the IETF draft "The Idempotency-Key
HTTP Header Field" describes them: the same key with another body is an error
(:class:`KeyReused`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from approvals.models import IdempotencyKey

KEY_TTL = 86400.0
"""Seconds a key is remembered."""

STALE_CLAIM = 300.0
"""Seconds after which a claim that never got its request may be claimed again."""


class KeyInFlight(Exception):
    """A call with this key is still being handled."""


class KeyReused(Exception):
    """This key was used with another body."""


class IdempotencyStore:
    """The keys in the database; ``clock`` returns an aware UTC datetime."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self._sessions = sessions
        self._clock = clock

    def claim(self, principal: str, key: str, body_sha256: str) -> int | None:
        """Claim ``key`` for ``principal``'s call with a body hashing to ``body_sha256``.

        Returns None when this call is the first (file the request, then :meth:`settle` or
        :meth:`release`), or the ID of the request an earlier call filed. Raises
        :class:`KeyInFlight` or :class:`KeyReused`.
        """
        now = self._clock()
        where = (IdempotencyKey.principal == principal, IdempotencyKey.key == key)
        with self._sessions.begin() as session:
            session.execute(
                delete(IdempotencyKey).where(
                    *where, IdempotencyKey.created_at < now - timedelta(seconds=KEY_TTL)
                )
            )
        try:
            with self._sessions.begin() as session:
                session.add(
                    IdempotencyKey(
                        principal=principal, key=key, body_sha256=body_sha256, created_at=now
                    )
                )
            return None
        except IntegrityError:
            pass
        with self._sessions.begin() as session:
            found = session.scalar(select(IdempotencyKey).where(*where).with_for_update())
            if found is None:  # released in between: the caller may retry
                raise KeyInFlight(key)
            if found.body_sha256 != body_sha256:
                raise KeyReused(key)
            if found.request_id is not None:
                return found.request_id
            if found.created_at > now - timedelta(seconds=STALE_CLAIM):
                raise KeyInFlight(key)
            found.created_at = now  # taken over from a call that never finished
            return None

    def settle(self, principal: str, key: str, request_id: int) -> None:
        """Record that the call holding ``key`` filed request ``request_id``."""
        with self._sessions.begin() as session:
            session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.principal == principal, IdempotencyKey.key == key)
                .values(request_id=request_id)
            )

    def release(self, principal: str, key: str) -> None:
        """Forget the claim of a call that filed nothing (refused), so a retry is decided
        afresh."""
        with self._sessions.begin() as session:
            session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.principal == principal,
                    IdempotencyKey.key == key,
                    IdempotencyKey.request_id.is_(None),
                )
            )
