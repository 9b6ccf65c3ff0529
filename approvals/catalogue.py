"""A kind's listing command (``KindSpec.catalogue``: ``/ops runbooks``), answered at once and
without a request: what the policy in force lets one caller ask for, and where.

A pure function of the policy, the groups' members and the caller, so that it belongs to no
room of the gate: the listener reads those three from the gate and calls :func:`catalogue`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from actions.spec import KindSpec
from approvals.lifecycle import Actor
from approvals.models import ActorKind
from approvals.policy import LoadedPolicy, RequestContext, explain_mismatches


def catalogue(
    loaded: LoadedPolicy, groups: Mapping[str, frozenset[str]], actor: Actor, spec: KindSpec
) -> list[str]:
    """The lines of ``spec``'s catalogue for ``actor`` (as the policy sees them: an agent is
    one), ``groups`` being each policy group's members: the kind may be asked for in an
    environment and namespace glob when the first rule matching such a request does not deny
    it. Raises ``ValueError`` when the kind has no catalogue."""
    if spec.catalogue is None:
        raise ValueError(f"{spec.name} has no catalogue")
    policy = loaded.policy
    kind: Literal["human", "agent"] = "agent" if actor.kind == ActorKind.AGENT else "human"

    def may_ask(environment: str, namespace: str) -> bool:
        ctx = RequestContext(spec.name, actor.id, environment, namespace, requester_kind=kind)
        why_not = explain_mismatches(loaded, ctx, groups=groups)
        rule = next((r for r, why in zip(policy.rules, why_not, strict=True) if not why), None)
        return rule is not None and rule.deny is None

    namespaces = {name: env.namespaces for name, env in policy.environments.items()}
    return spec.catalogue.lines(policy.kind_settings(spec), namespaces, may_ask)
