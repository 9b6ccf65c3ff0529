"""Who is calling the HTTP API: ``Authorization: Bearer <token>``.

An opsgate token (``ogt_…``, :mod:`approvals.tokens`) acts as the agent or person it was
created for. An agent's token works only while the policy lists the agent under ``agents``.
Anything else (no header, another scheme, an unknown, revoked or expired token) is refused
with :class:`Unauthenticated`, answered 401 with ``WWW-Authenticate: Bearer`` (RFC 6750).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from approvals.lifecycle import Actor
from approvals.models import ActorKind
from approvals.policy import LoadedPolicy
from approvals.tokens import TokenRefused, TokenStore

log = logging.getLogger(__name__)


class Unauthenticated(Exception):
    """The caller is not authenticated; ``str()`` says why (never a token)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: who they act as (``actor``), the agent's name in the policy
    (``agent``, None for a person) and the token used (``token_id``)."""

    actor: Actor
    agent: str | None
    token_id: int


class Authenticator:
    """Checks bearer tokens against ``tokens`` under the policy in force (``policy``)."""

    def __init__(self, tokens: TokenStore, policy: Callable[[], LoadedPolicy]) -> None:
        self._tokens = tokens
        self._policy = policy

    def __call__(self, authorization: str | None, *, method: str, path: str) -> Principal:
        """The caller of a request with this ``Authorization`` header. Raises
        :class:`Unauthenticated`."""
        if not authorization:
            raise Unauthenticated("missing Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("use Authorization: Bearer <token>")
        try:
            info = self._tokens.authenticate(token.strip(), method=method, path=path)
        except TokenRefused as exc:
            log.info("API call %s %s refused: %s", method, path, exc)
            raise Unauthenticated(f"token refused: {exc}") from None
        actor = info.actor
        agents = self._policy().policy.agents
        if actor.kind == ActorKind.AGENT:
            agent = agents.get(actor.id)
            if agent is None:
                log.info("API token #%s: %s is no longer in the policy's agents", info.id, actor.id)
                raise Unauthenticated(f"the policy no longer lists agent {info.name!r}")
            return Principal(actor, agent.name, info.id)
        if actor.id in agents:  # a person's token for an ID the policy says is automation
            agent_name = agents[actor.id].name
            return Principal(Actor(actor.id, ActorKind.AGENT), agent_name, info.id)
        return Principal(actor, None, info.id)
