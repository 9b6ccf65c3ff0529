"""The ClusterRole opsgate's service account needs for a policy (``opsgate rbac``).

:data:`actions.backends.kube_permissions.API_RULES` (what the Kubernetes adapter calls), plus
``get`` and ``bind`` on exactly the ClusterRoles the policy's access rules may grant
(``resourceNames``): so a RoleBinding to any other ClusterRole is refused by the API server even
if opsgate were tricked into asking for one. Jobs and pod logs only for a policy that runs
runbooks.
"""

from __future__ import annotations

from typing import Any

from actions.access import KIND as ACCESS_KIND
from actions.access_settings import AccessSettings
from actions.backends.kube_permissions import API_RULES, cluster_role_rule
from actions.registry import KINDS
from approvals.policy import LoadedPolicy

DEFAULT_NAME = "opsgate"
"""The ClusterRole's default name, as ``deploy/kubernetes`` names it."""

GRANTING_ACTIONS = frozenset({"access"})
"""The actions that create RoleBindings to the rule's ``roles``."""


class UnboundedRoles(ValueError):
    """A rule may grant any ClusterRole (an access rule without ``roles``): no ClusterRole can
    limit ``bind`` to what it grants."""


def granted_roles(loaded: LoadedPolicy) -> list[str]:
    """The sorted names of every ClusterRole an access rule of the policy may grant.

    Raises :class:`UnboundedRoles` naming the rules without ``roles``.
    """
    roles: set[str] = set()
    unbounded: list[str] = []
    for index, rule in enumerate(loaded.policy.rules):
        if not GRANTING_ACTIONS.intersection(rule.match.action):
            continue
        settings = rule.kind_settings(ACCESS_KIND)
        allowed = settings.roles if isinstance(settings, AccessSettings) else None
        if allowed is None:
            unbounded.append(loaded.rule_label(index))
            continue
        roles.update(allowed)
    if unbounded:
        raise UnboundedRoles(
            f"{', '.join(unbounded)} may grant any ClusterRole (no 'roles'); list the roles it "
            "grants, so that opsgate's ClusterRole can name them in its 'bind' rule"
        )
    return sorted(roles)


def kind_rules(loaded: LoadedPolicy) -> list[dict[str, Any]]:
    """The ``cluster_rules`` of each kind (:class:`actions.spec.KindSpec`) the policy uses: a
    rule decides it and, for a kind with top-level settings, the policy declares some (a policy
    that runs runbooks gets the Job rules; one that runs none does not)."""
    rules: list[dict[str, Any]] = []
    for spec in KINDS:
        if not spec.cluster_rules:
            continue
        if not any(spec.name in r.match.action for r in loaded.policy.rules):
            continue
        settings = loaded.policy.kind_settings(spec)
        if spec.policy_settings is not None and (
            settings is None or not settings.model_dump(exclude_defaults=True)
        ):
            continue
        rules += [dict(rule) for rule in spec.cluster_rules]
    return rules


def cluster_role(loaded: LoadedPolicy, *, name: str = DEFAULT_NAME) -> dict[str, Any]:
    """The ``rbac.authorization.k8s.io/v1`` ClusterRole ``name`` for the policy, as a dict ready
    for YAML: :data:`~actions.backends.kube_permissions.API_RULES`, the rules of the kinds it
    uses (:func:`kind_rules`: the Job rules when it runs runbooks), then (when the policy grants
    any) the rule on the ClusterRoles it grants. Raises :class:`UnboundedRoles`."""
    rules = [dict(rule) for rule in API_RULES]
    rules += kind_rules(loaded)
    roles = granted_roles(loaded)
    if roles:
        rules.append(cluster_role_rule(roles))
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "opsgate"},
            "annotations": {
                "opsgate.io/generated-by": "opsgate rbac",
                "opsgate.io/policy-sha256": loaded.sha256,
            },
        },
        "rules": rules,
    }
