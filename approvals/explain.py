"""A dry run of the gate's submission: the decision and the preview a request would get, with
nothing filed, audited or announced (``POST /api/v1/explain``, the MCP ``explain`` tool).

It follows :meth:`approvals.gate.Gate.submit` step by step (environment, decision, the
rule's settings, the kind's preview, which is itself checked with a server-side dry run), and
stops before the request is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from actions.base import ActionKind, Preview, Target
from actions.errors import ActionError
from approvals.lifecycle import Actor
from approvals.models import ActorKind
from approvals.policy import (
    Decision,
    LoadedPolicy,
    Outcome,
    RequestContext,
    decide,
    request_reversible,
    resolve_environment,
)


@dataclass(frozen=True)
class Explained:
    """What the gate would do: the ``decision``, the ``environment`` resolved, and the
    ``preview`` (None when the policy denies, or with ``preview_error`` when it failed)."""

    decision: Decision
    environment: str | None
    preview: Preview | None
    preview_error: str | None


def explain(
    loaded: LoadedPolicy,
    kind: ActionKind,
    *,
    params: BaseModel,
    requester: Actor,
    namespace: str | None,
    env: str | None,
    path: str | None,
    reason: str | None,
    break_glass: bool,
    groups: Mapping[str, frozenset[str]],
    now: datetime,
    adjust: Callable[[Decision], Decision] = lambda decision: decision,
) -> Explained:
    """Decide and preview one request as the gate would, filing nothing.

    ``adjust`` may change the policy's decision as the gate does (earned autonomy).
    Raises :class:`approvals.policy.NamespaceError` for a namespace or environment the policy
    does not know (the gate refuses those before deciding).
    """
    policy = loaded.policy
    environment: str | None = None
    context: str | None = None
    if namespace is not None:
        environment = resolve_environment(policy, namespace, env)
        context = policy.environments[environment].kube_context
    requester_kind: Literal["human", "agent"] = (
        "agent" if requester.kind == ActorKind.AGENT else "human"
    )
    decision = decide(
        loaded,
        RequestContext(
            action=kind.name,
            requester=requester.id,
            requester_kind=requester_kind,
            environment=environment,
            namespace=namespace,
            path=path,
            reason=reason,
            break_glass=break_glass,
            at=now,
            kind_reversible=request_reversible(
                policy, kind.name, params, kind.reversible, environment
            ),
        ),
        groups=groups,
    )
    decision = adjust(decision)
    if decision.outcome is Outcome.DENY:
        return Explained(decision, environment, None, None)
    consumers_namespace = (decision.settings.get("rotate") or {}).get("namespace")
    if context is None and consumers_namespace:
        consumers_env = resolve_environment(policy, consumers_namespace, env)
        context = policy.environments[consumers_env].kube_context
        environment = environment or consumers_env
    identity = policy.identities.get(requester.id)
    settings: dict[str, Any] = {
        **decision.settings,
        "identity": identity.model_dump() if identity is not None else None,
    }
    target = Target(
        environment=environment or "", kube_context=context, namespace=namespace, settings=settings
    )
    try:
        preview = kind.preview(params, target=target)
    except ActionError as exc:
        return Explained(decision, environment, None, str(exc))
    return Explained(decision, environment, preview, None)
