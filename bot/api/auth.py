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
from typing import Any

from actions.errors import ActionError
from approvals.lifecycle import Actor
from approvals.models import ActorKind
from approvals.policy import LoadedPolicy
from approvals.tokens import PREFIX, TokenRefused, TokenStore

log = logging.getLogger(__name__)


class Unauthenticated(Exception):
    """The caller is not authenticated; ``str()`` says why (never a token)."""


class AuthUnavailable(Exception):
    """The token could not be checked (the Kubernetes API did not answer a TokenReview)."""


TokenReviewer = Callable[[str | None, str], dict[str, Any]]
"""``(kube context, token) → TokenReview status``: :meth:`KubernetesBackend.review_token`."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: who they act as (``actor``), the agent's name in the policy
    (``agent``, None for a person) and the opsgate token used (``token_id``; None for a
    ServiceAccount token)."""

    actor: Actor
    agent: str | None
    token_id: int | None


class Authenticator:
    """Checks bearer tokens against ``tokens`` under the policy in force (``policy``)."""

    def __init__(
        self,
        tokens: TokenStore,
        policy: Callable[[], LoadedPolicy],
        review: TokenReviewer | None = None,
    ) -> None:
        self._tokens = tokens
        self._policy = policy
        self._review = review

    def __call__(self, authorization: str | None, *, method: str, path: str) -> Principal:
        """The caller of a request with this ``Authorization`` header. Raises
        :class:`Unauthenticated`."""
        if not authorization:
            raise Unauthenticated("missing Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("use Authorization: Bearer <token>")
        if not token.strip().startswith(PREFIX) and self._review is not None:
            return self._service_account(token.strip(), method=method, path=path)
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

    def _service_account(self, token: str, *, method: str, path: str) -> Principal:
        """The agent whose ``service_account`` a TokenReview says ``token`` belongs to.
        Raises :class:`Unauthenticated` or :class:`AuthUnavailable`."""
        assert self._review is not None
        policy = self._policy().policy
        by_context: dict[str | None, dict[str, str]] = {}
        for agent_id, agent in policy.agents.items():
            account = agent.service_account
            if account is None:
                continue
            environment = policy.environments.get(account.environment or "")
            context = environment.kube_context if environment is not None else None
            by_context.setdefault(context, {})[account.username] = agent_id
        if not by_context:
            raise Unauthenticated("not an opsgate token (they start with ogt_)")
        for context, accounts in by_context.items():
            try:
                status = self._review(context, token)
            except ActionError as exc:
                log.error("API call %s %s: TokenReview failed: %s", method, path, exc)
                raise AuthUnavailable(f"the token could not be checked: {exc}") from None
            username = (status.get("user") or {}).get("username")
            if status.get("authenticated") is True and username in accounts:
                agent_id = accounts[username]
                actor = Actor(agent_id, ActorKind.AGENT)
                detail = {"service_account": username, "method": method, "path": path}
                self._tokens.audit_use(actor, detail)
                return Principal(actor, policy.agents[agent_id].name, None)
            if status.get("authenticated") is True:
                log.info("API call %s %s: %s is no agent's service account", method, path, username)
                raise Unauthenticated(f"{username} is not the service account of any agent")
        log.info("API call %s %s refused: the TokenReview did not authenticate it", method, path)
        raise Unauthenticated(
            "token refused: not an opsgate token nor a valid service account token"
        )
