"""What the gate answers the person who asked or clicked, and what a request is made of.

Errors are :class:`GateError` subclasses whose message can be shown as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from approvals.lifecycle import Actor

STRANDED_AFTER = 300.0
"""Seconds after which a pending request that was never put to its approvers is stranded."""


class GateError(Exception):
    """An answer for the person who asked or clicked; ``str()`` is the message to show them."""


class Rejected(GateError):
    """The request cannot be made: bad namespace, missing target, no rule allows it, …"""


class NotAllowed(GateError):
    """The clicker may not decide this request."""


class AlreadyDecided(GateError):
    """The request is no longer pending (or this person already approved it)."""


class UnknownRequest(GateError):
    """No request has this ID (or none the person asking may see)."""


class RateLimited(Rejected):
    """The requester made as many new requests in the last minute as the policy allows."""


@dataclass(frozen=True)
class Origin:
    """Where a request was made: the Slack channel (ID and name) and the command's response_url."""

    channel_id: str | None = None
    channel_name: str | None = None
    response_url: str | None = None


@dataclass(frozen=True)
class Submission:
    """A parsed request: the action's params model, its namespace, ``--env``, ``--reason``."""

    action: str
    params: BaseModel
    requester: Actor
    namespace: str | None = None
    env: str | None = None
    reason: str | None = None
    origin: Origin = Origin()
    path: str | None = None
    break_glass: str | None = None
    owed: int | None = None
    """The inbox row (:mod:`approvals.inbox`) of the Slack request that asked for it, settled
    in the transaction that files the request: a replay of that row files nothing twice."""


class UsergroupDirectory(Protocol):
    """Members of Slack user groups (``S…`` IDs), cached; ``bot.usergroups`` implements it."""

    def members(self, usergroup_id: str) -> frozenset[str]: ...

    def refresh(self) -> None: ...
