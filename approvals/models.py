"""Persistence: typed SQLAlchemy 2 models for requests, approvals and audit events.

Queries live in :mod:`approvals.lifecycle` and :mod:`approvals.gate` as functions that take the
session first; the caller owns the transaction. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A ``DateTime(timezone=True)`` that always hands back aware UTC datetimes, SQLite included."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Status(StrEnum):
    """A request's lifecycle state (docs/architecture.md, 'The request lifecycle')."""

    PENDING = "pending"
    APPROVED = "approved"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"  # sent, unanswered, and reading it back could not tell: check the target
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ACTIVE = "active"
    REVOKED = "revoked"


class ActorKind(StrEnum):
    """Who acts: a person, automation (never an approver), or opsgate itself."""

    HUMAN = "human"
    AGENT = "agent"
    SYSTEM = "system"


class Request(Base):
    """One request (restart, scale, …) from its submission to its end."""

    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True)
    requester_id: Mapped[str] = mapped_column(String(64), index=True)
    requester_kind: Mapped[str] = mapped_column(String(16), default=ActorKind.HUMAN.value)
    environment: Mapped[str | None] = mapped_column(String(64))
    namespace: Mapped[str | None] = mapped_column(String(253))
    target: Mapped[str] = mapped_column(String(512))
    reason: Mapped[str | None] = mapped_column(Text)
    # where the request was made, and the requester's thread there
    origin_channel_id: Mapped[str | None] = mapped_column(String(64))
    origin_channel_name: Mapped[str | None] = mapped_column(String(256))
    incident: Mapped[bool] = mapped_column(default=False)
    response_url: Mapped[str | None] = mapped_column(Text)
    thread_channel_id: Mapped[str | None] = mapped_column(String(64))
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    # where approval was asked
    approval_channel_id: Mapped[str | None] = mapped_column(String(64))
    approval_ts: Mapped[str | None] = mapped_column(String(32))
    # the decision of the policy it was made under
    rule: Mapped[str | None] = mapped_column(String(256))
    policy_sha256: Mapped[str] = mapped_column(String(64))
    min_approvals: Mapped[int] = mapped_column(default=0)
    approvers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    preview: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # when it stops waiting, and who is pinged when nobody has decided (issue 6)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    escalate_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    # break-glass: executed at once, reviewed afterwards
    break_glass: Mapped[bool] = mapped_column(default=False)
    review_channel_id: Mapped[str | None] = mapped_column(String(64))
    review_ts: Mapped[str | None] = mapped_column(String(32))
    reviewed_by: Mapped[str | None] = mapped_column(String(64))
    reviewed_at: Mapped[datetime | None]
    # how it ended
    decided_by: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    # a change applied whose rollout is still followed (status executing): what was applied,
    # its facts, the workload (actions.base.RolloutWatch), when the change was made and the
    # timeout in seconds; read by Gate.follow_rollouts, cleared when the request finishes
    rollout: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    approvals: Mapped[list[Approval]] = relationship(
        back_populates="request", lazy="raise", order_by="Approval.id"
    )


class Approval(Base):
    """One person's approval of a request; a person approves a request at most once."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("request_id", "approver_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"))
    approver_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]

    request: Mapped[Request] = relationship(back_populates="approvals", lazy="raise")


class AuditEvent(Base):
    """One entry of the audit trail: who did what to which request, when, under which policy."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("requests.id", ondelete="SET NULL"), index=True
    )
    event: Mapped[str] = mapped_column(String(64))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(64))
    actor_kind: Mapped[str] = mapped_column(String(16))
    action: Mapped[str | None] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(512))
    rule: Mapped[str | None] = mapped_column(String(256))
    policy_sha256: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(index=True)
    # The hash chain (approvals.audit_chain): position in commit order, the previous event's
    # hash and this one's; NULL only until the writing transaction commits.
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))


class AuditChainHead(Base):
    """The one row (``id`` 1) that holds the chain's last ``seq`` and ``hash``: locked by every
    transaction that chains events, so events are chained in commit order."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditSink(Base):
    """A delivery cursor over the chain (approvals.audit_sink): the events up to
    ``delivered_seq`` have been accepted by the sink ``name``; after a failure, the next attempt
    waits until ``next_attempt_at``; a run holds the sink (``lease_owner``) until
    ``lease_until``."""

    __tablename__ = "audit_sinks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    delivered_seq: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]


class GrantStatus(StrEnum):
    """A grant's state: ``active`` until claimed for removal (``revoking``), then ``revoked``."""

    ACTIVE = "active"
    REVOKING = "revoking"
    REVOKED = "revoked"


class Grant(Base):
    """One time-bound access grant; its ID is the ID of the access request that made it.

    The database is the source of truth for expiry: ``expires_at`` is when the grant must end,
    whatever the scheduler remembers. ``revoke_reason``/``revoked_by`` are written when the grant
    is claimed for removal (``revoking``), so a retry after a crash revokes for the same reason.
    """

    __tablename__ = "grants"
    __table_args__ = (Index("ix_grants_status_expires_at", "status", "expires_at"),)

    id: Mapped[int] = mapped_column(
        ForeignKey("requests.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    grantee_id: Mapped[str] = mapped_column(String(64), index=True)
    kube_context: Mapped[str | None] = mapped_column(String(253))
    environment: Mapped[str | None] = mapped_column(String(64))
    namespace: Mapped[str] = mapped_column(String(253))
    role: Mapped[str] = mapped_column(String(253))
    cluster_role: Mapped[str] = mapped_column(String(253))
    kubernetes_user: Mapped[str] = mapped_column(String(253))
    role_binding: Mapped[str] = mapped_column(String(253))
    vault_group: Mapped[str | None] = mapped_column(String(253))
    vault_entity: Mapped[str | None] = mapped_column(String(253))
    vault_entity_id: Mapped[str | None] = mapped_column(String(64))
    vault_member_added: Mapped[bool | None]
    """True: this grant (or the chain of overlapping opsgate grants of the same entity and group
    it joined) added the entity to ``vault_group``, so its end may remove it; False: the entity
    was a member before, through no opsgate grant, and stays; None: no Vault group."""
    duration_seconds: Mapped[int]
    max_duration_seconds: Mapped[int | None]
    started_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    reminded_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(64))
    revoke_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


class SlackEvent(Base):
    """An Events API delivery already handled, by its ``event_id``: Slack redelivers an event
    (same ``event_id``) when it got no answer in 3 seconds, possibly to another replica."""

    __tablename__ = "slack_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(index=True)


class ApiToken(Base):
    """A bearer token for the HTTP API (issue 12); only its SHA-256 is stored.

    ``subject_id`` is who the token acts as: an ``agents`` ID of the policy (``subject_kind``
    ``agent``) or a Slack user ID (``human``); ``name`` is the agent's name or a label;
    ``prefix`` is the token's first characters, shown by ``opsgate token list``.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(64), index=True)
    subject_kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` a caller sent with ``POST /api/v1/requests``: a retry with the same
    key (and body) gets the request the first one filed. ``request_id`` is NULL while the first
    call is still being handled."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("principal", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    body_sha256: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("requests.id", ondelete="CASCADE"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(index=True)


class AutonomyReset(Base):
    """An agent put back to needing approval under a rule's ``autonomy`` (the Undo button, or
    opsgate itself): only what it earns after ``reset_at`` counts again."""

    __tablename__ = "autonomy_resets"
    __table_args__ = (Index("ix_autonomy_resets_agent_id_rule", "agent_id", "rule"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(256))
    reset_at: Mapped[datetime]
    reset_by: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class OwedWork(Base):
    """Work a Slack listener acked and handed off, until it is done (the transactional inbox).

    The listener writes the row before its ack: ``kind`` (``command``, ``click``, ``mention``)
    and ``payload`` (the validated fields the work needs, nothing secret) say what to do,
    ``dedupe_key`` (``command:<trigger_id>``, ``event:<event_id>``) makes a redelivery of the
    same Slack request write nothing. ``owner`` (``<instance>/<process token>``) and
    ``lease_until`` say who runs it until when; a row not ``done_at`` whose lease ran out, or
    left by an earlier run of the same instance, is replayed (:mod:`approvals.inbox`).
    """

    __tablename__ = "owed_work"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    user_id: Mapped[str] = mapped_column(String(64))
    response_url: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(128))
    lease_until: Mapped[datetime] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(default=1)
    received_at: Mapped[datetime] = mapped_column(index=True)
    done_at: Mapped[datetime | None]
