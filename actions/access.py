"""``access``: time-bound access to a namespace, and optionally to Vault, that ends by itself.

A grant is a RoleBinding (``rbac.authorization.k8s.io/v1``) in the namespace that binds the
requester's Kubernetes user to the ClusterRole named like the role (``view``, ``edit``), and, when
the rule maps the role to a Vault identity group (``vault_groups``), the requester's Vault entity
made a member of that group (which carries the role's Vault policies). Nothing is ever sent to the
requester: their own credentials gain the permissions, and lose them when the grant ends.

The RoleBinding is named ``opsgate-grant-<id>`` (the grant ID is the request ID), labelled
``app.kubernetes.io/managed-by: opsgate`` and annotated with the grant ID and the expiry (RFC 3339),
so a drift check can find every binding opsgate made and tell whether it should still exist.
The clock starts when the grant takes effect (``execute``), not when it was asked for.

Rule settings (``Target.settings``)::

    roles             list of role names allowed (None: any ClusterRole); the first is the default
    max_duration      seconds, or None (no limit)
    default_duration  seconds, or None (one hour, capped at max_duration)
    vault_groups      {role: Vault identity group name} (in the policy file a name, or
                      {group: NAME, members_managed_elsewhere: bool}: ``VaultGroup``)
    extend            "auto" | "approval"
    identity          {"kubernetes_user": ..., "vault_entity": ...} of the requester, or None
    request_id        the request's ID (execute only): names the RoleBinding

The policy file's form of these settings is :class:`actions.access_settings.AccessSettings`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from actions.access_settings import DEFAULT_DURATION, AccessSettings
from actions.base import Outcome, Preview, Target
from actions.durations import format_duration as format_duration  # approvals.grants
from actions.errors import (
    ActionError,
    Invalid,
    MaybeApplied,
    NotFound,
    OutcomeUnknown,
    PermanentError,
)
from actions.kube import KubernetesPort
from actions.readback import CONFIRMED, Seen, read_back
from actions.spec import Arg, ArgType, KindSpec, Scope
from actions.vault import VaultPort

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "opsgate"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
GRANT_ID_ANNOTATION = "opsgate.io/grant-id"
GRANT_ID_LABEL = "opsgate.io/grant-id"
"""Also a label, so that the RoleBindings of many grants are deleted in one call (a label
selector); RoleBindings made before it existed carry only the annotation."""
EXPIRES_AT_ANNOTATION = "opsgate.io/expires-at"
GRANTEE_ANNOTATION = "opsgate.io/kubernetes-user"
RBAC_GROUP = "rbac.authorization.k8s.io"

NO_KUBERNETES_IDENTITY = (
    "you have no identity for Kubernetes in the policy's identities; "
    "ask the platform team to add you"
)


class AccessParams(BaseModel):
    """``/ops access <namespace> [--role ROLE] [--for DURATION]``; None means the rule's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(min_length=1, max_length=63)
    role: str | None = Field(default=None, min_length=1, max_length=253)
    duration_seconds: int | None = Field(default=None, gt=0)


KIND = KindSpec(
    name="access",
    summary="time-bound access to a namespace for your own identity (e.g. --for 1h)",
    example='/ops access payments --role view --for 1h --reason "read the logs of INC-42"',
    grammar=(
        Arg("namespace", metavar="<namespace>", help="the namespace to get access to"),
        Arg(
            "role",
            flags=("--role",),
            metavar="ROLE",
            required=False,
            help="the ClusterRole to be bound (default: the rule's first role)",
        ),
        Arg(
            "duration_seconds",
            ArgType.DURATION,
            flags=("--for",),
            metavar="DURATION",
            required=False,
            help="how long (30m, 2h, 1h30m; default: the rule's default_duration)",
        ),
    ),
    params_model=AccessParams,
    scope=Scope.NAMESPACE,
    reversible=True,  # a grant ends by itself, and can be revoked
    rule_settings=AccessSettings,
    build=lambda b: Access(kube=b.kube, vault=b.vault, clock=b.clock),
)


def role_binding_name(grant_id: int) -> str:
    """``opsgate-grant-<id>``."""
    return f"opsgate-grant-{grant_id}"


def rfc3339(moment: datetime) -> str:
    """``2026-11-21T05:00:00Z`` (UTC, whole seconds), as Kubernetes writes timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """The inverse of :func:`rfc3339` (any offset accepted); raises ``ValueError``."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment.astimezone(UTC)


def role_binding_body(
    *,
    grant_id: int,
    namespace: str,
    cluster_role: str,
    kubernetes_user: str,
    expires_at: datetime,
) -> dict[str, Any]:
    """The RoleBinding of grant ``grant_id``: the user bound to the ClusterRole in ``namespace``,
    labelled managed-by opsgate, annotated with the grant ID and the expiry (RFC 3339)."""
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": role_binding_name(grant_id),
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, GRANT_ID_LABEL: str(grant_id)},
            "annotations": {
                GRANT_ID_ANNOTATION: str(grant_id),
                EXPIRES_AT_ANNOTATION: rfc3339(expires_at),
                GRANTEE_ANNOTATION: kubernetes_user,
            },
        },
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "User", "name": kubernetes_user}],
    }


def _seconds(settings: Mapping[str, Any], key: str) -> int | None:
    value = settings.get(key)
    return None if value is None else int(value)


def _role(params: AccessParams, settings: Mapping[str, Any]) -> str:
    """The role asked for, else the rule's first; Invalid when there is none or the rule's
    ``roles`` do not allow it."""
    roles: list[str] | None = settings.get("roles")
    role = params.role or (roles[0] if roles else None)
    if role is None:
        raise Invalid("say which role you need with --role (the rule names no default)")
    if roles is not None and role not in roles:
        raise Invalid(f"role '{role}' is not allowed here; allowed: {', '.join(roles)}")
    return role


def _duration(params: AccessParams, settings: Mapping[str, Any]) -> tuple[int, int | None]:
    """``(duration, max_duration)`` in seconds: the one asked for, else the rule's default (one
    hour when it has none), capped at ``max_duration``; Invalid when the one asked for is
    longer."""
    max_duration = _seconds(settings, "max_duration")
    default = _seconds(settings, "default_duration") or DEFAULT_DURATION
    if max_duration is not None:
        default = min(default, max_duration)
    duration = params.duration_seconds or default
    if max_duration is not None and duration > max_duration:
        raise Invalid(
            f"{format_duration(duration)} is longer than this rule allows "
            f"(at most {format_duration(max_duration)})"
        )
    return duration, max_duration


class Access:
    """The access request kind.

    ``kube`` and ``vault`` (None: Vault is not configured, and rules that map a role to a Vault
    group cannot be satisfied) are the adapters; ``clock`` returns an aware UTC ``datetime``.
    """

    name: ClassVar[str] = KIND.name
    reversible: ClassVar[bool] = KIND.reversible
    params_model: ClassVar[type[BaseModel]] = KIND.params_model

    def __init__(
        self,
        *,
        kube: KubernetesPort,
        vault: VaultPort | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._kube = kube
        self._vault = vault
        self._clock = clock

    # --- preview ------------------------------------------------------------------------------

    def preview(self, params: BaseModel, *, target: Target) -> Preview:
        """Check the request against the rule and the backends; describe the grant.

        Raises ``Invalid`` when the requester has no Kubernetes identity (or no Vault entity where
        the role needs one), the role is not one of the rule's ``roles``, or the duration is over
        ``max_duration``; ``NotFound`` when the ClusterRole or the Vault entity does not exist.
        """
        assert isinstance(params, AccessParams)
        settings = target.settings
        identity: Mapping[str, Any] = settings.get("identity") or {}
        kubernetes_user = identity.get("kubernetes_user")
        if not kubernetes_user:
            raise Invalid(NO_KUBERNETES_IDENTITY)

        role = _role(params, settings)
        duration, max_duration = _duration(params, settings)
        try:
            self._kube.get_cluster_role(target.kube_context, role)
        except NotFound as exc:
            raise NotFound(
                f"there is no ClusterRole '{role}' in the cluster of environment "
                f"{target.environment}"
            ) from exc
        vault_groups: Mapping[str, str] = settings.get("vault_groups") or {}
        vault_group = vault_groups.get(role)
        vault_entity: str | None = None
        vault_entity_id: str | None = None
        if vault_group is not None:
            vault_entity, vault_entity_id = self._vault_entity(role, identity)

        lines = [
            f"Access for Kubernetes user *{kubernetes_user}*",
            f"Role *{role}* (ClusterRole {role}) in namespace *{params.namespace}* "
            f"(environment {target.environment})",
            f"Duration {format_duration(duration)}"
            + (f" (at most {format_duration(max_duration)})" if max_duration else ""),
            "Starts when approved; revoked automatically when it ends",
        ]
        if vault_group is not None:
            lines.append(f"Vault: entity *{vault_entity}* joins group *{vault_group}*")
        facts: dict[str, Any] = {
            "namespace": params.namespace,
            "role": role,
            "cluster_role": role,
            "kubernetes_user": kubernetes_user,
            "duration_seconds": duration,
            "max_duration_seconds": max_duration,
            "vault_group": vault_group,
            "vault_entity": vault_entity,
            "vault_entity_id": vault_entity_id,
            "extend": settings.get("extend") or "approval",
        }
        return Preview(
            target=f"{role} access to {params.namespace}", lines=tuple(lines), facts=facts
        )

    def _vault_entity(self, role: str, identity: Mapping[str, Any]) -> tuple[str, str]:
        """The requester's Vault entity name and ID, for a role that includes Vault access.
        Raises Invalid (no entity in the policy's identities, no Vault) or NotFound."""
        vault_entity = identity.get("vault_entity")
        if not vault_entity:
            raise Invalid(
                f"role '{role}' includes Vault access, but you have no Vault entity in the "
                "policy's identities; ask the platform team to add you"
            )
        if self._vault is None:
            raise Invalid(f"role '{role}' includes Vault access, but Vault is not configured")
        try:
            return vault_entity, self._vault.entity_id(vault_entity)
        except NotFound as exc:
            raise NotFound(f"there is no Vault identity entity named '{vault_entity}'") from exc

    # --- execute ------------------------------------------------------------------------------

    def execute(self, params: BaseModel, *, target: Target, preview: Preview) -> Outcome:
        """Create the RoleBinding and the Vault group membership; the clock starts now.

        Needs ``target.settings["request_id"]`` (the grant ID). Returns ``Outcome.facts["grant"]``
        with everything :meth:`revoke` needs: ``kube_context``, ``environment``, ``namespace``,
        ``role``, ``cluster_role``, ``kubernetes_user``, ``role_binding``, ``vault_group``,
        ``vault_entity``, ``vault_entity_id``, ``vault_member_before`` (the entity was a member
        of the group before this grant added it; None without a Vault group),
        ``duration_seconds``, ``max_duration_seconds``, ``started_at`` and ``expires_at``
        (RFC 3339), ``extend``. If the Vault step fails the
        RoleBinding is deleted again before the error is raised (nothing is left half-granted).
        A RoleBinding write sent without an answer is read back (:mod:`actions.readback`): there
        as asked (carry on), absent (``TemporaryError``: safe to ask again), or otherwise
        (``OutcomeUnknown``).
        """
        assert isinstance(params, AccessParams)
        request_id = target.settings.get("request_id")
        if request_id is None:
            raise PermanentError("an access grant needs its request ID (settings['request_id'])")
        grant_id = int(request_id)
        facts = preview.facts
        started_at = self._clock().astimezone(UTC).replace(microsecond=0)
        duration = int(facts["duration_seconds"])
        expires_at = started_at + timedelta(seconds=duration)
        body = role_binding_body(
            grant_id=grant_id,
            namespace=params.namespace,
            cluster_role=facts["cluster_role"],
            kubernetes_user=facts["kubernetes_user"],
            expires_at=expires_at,
        )
        name = body["metadata"]["name"]
        confirmed = False
        try:
            self._kube.apply_role_binding(target.kube_context, params.namespace, body)
        except MaybeApplied as exc:
            self._read_back(exc, target.kube_context, body)
            confirmed = True
        vault_group = facts.get("vault_group")
        member_before: bool | None = None
        if vault_group is not None:
            try:
                member_before = self._join_group(vault_group, facts["vault_entity_id"])
            except ActionError:
                self._kube.delete_role_binding(target.kube_context, params.namespace, name)
                raise
        grant = {
            "kube_context": target.kube_context,
            "environment": target.environment,
            "namespace": params.namespace,
            "role": facts["role"],
            "cluster_role": facts["cluster_role"],
            "kubernetes_user": facts["kubernetes_user"],
            "role_binding": name,
            "vault_group": vault_group,
            "vault_entity": facts.get("vault_entity"),
            "vault_entity_id": facts.get("vault_entity_id"),
            "vault_member_before": member_before,
            "duration_seconds": duration,
            "max_duration_seconds": facts.get("max_duration_seconds"),
            "started_at": rfc3339(started_at),
            "expires_at": rfc3339(expires_at),
            "extend": facts.get("extend"),
        }
        vault = f" and Vault group {vault_group}" if vault_group else ""
        read = f" ({CONFIRMED})" if confirmed else ""
        return Outcome(
            summary=(
                f"granted {facts['role']} in {params.namespace}{vault} to "
                f"{facts['kubernetes_user']} until {rfc3339(expires_at)}{read}"
            ),
            facts={"grant": grant},
        )

    def _join_group(self, group: str, entity_id: str) -> bool:
        """Add ``entity_id`` to Vault group ``group``; returns whether it was a member already
        (the group's members read just before). Raises ``actions.errors`` errors."""
        if self._vault is None:
            raise PermanentError("Vault is not configured")
        before = entity_id in self._vault.group_member_ids(group)
        self._vault.add_group_member(group, entity_id)
        return before

    def _read_back(
        self, error: MaybeApplied, kube_context: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The RoleBinding read back after a write that got no answer; see
        :func:`actions.readback.read_back`. Absent (``{}``) means not applied; one whose
        ``roleRef``, ``subjects`` and annotations are ``body``'s means applied."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]

        def read() -> dict[str, Any]:
            try:
                return self._kube.get_role_binding(kube_context, namespace, name)
            except NotFound:
                return {}

        def judge(binding: dict[str, Any]) -> Seen:
            if not binding:
                return Seen.NOT_APPLIED
            annotations = (binding.get("metadata") or {}).get("annotations") or {}
            if (
                binding.get("roleRef") == body["roleRef"]
                and binding.get("subjects") == body["subjects"]
                and body["metadata"]["annotations"].items() <= annotations.items()
            ):
                return Seen.APPLIED
            return Seen.UNCLEAR

        def state(binding: dict[str, Any]) -> dict[str, Any]:
            if not binding:
                return {"rolebinding": "absent"}
            annotations = (binding.get("metadata") or {}).get("annotations") or {}
            subjects = binding.get("subjects") or []
            return {
                "clusterrole": (binding.get("roleRef") or {}).get("name", "?"),
                "subjects": ", ".join(str(s.get("name", "?")) for s in subjects) or "none",
                "expires": annotations.get(EXPIRES_AT_ANNOTATION, "?"),
            }

        try:
            return read_back(
                error,
                change="the grant",
                subject=f"rolebinding/{name} in {namespace}",
                read=read,
                judge=judge,
                state=state,
            )
        except OutcomeUnknown as exc:
            raise OutcomeUnknown(
                f"{exc}. No grant is recorded, so the drift check removes this RoleBinding if it "
                "exists",
                facts=exc.facts,
            ) from exc

    # --- after execute ------------------------------------------------------------------------

    def set_expiry(
        self,
        *,
        grant_id: int,
        kube_context: str | None,
        namespace: str,
        cluster_role: str,
        kubernetes_user: str,
        expires_at: datetime,
    ) -> None:
        """Rewrite the RoleBinding with a new expiry annotation (an extension)."""
        self._kube.apply_role_binding(
            kube_context,
            namespace,
            role_binding_body(
                grant_id=grant_id,
                namespace=namespace,
                cluster_role=cluster_role,
                kubernetes_user=kubernetes_user,
                expires_at=expires_at,
            ),
        )

    def revoke(
        self,
        *,
        kube_context: str | None,
        namespace: str,
        role_binding: str,
        vault_group: str | None = None,
        vault_entity_id: str | None = None,
        role_binding_deleted: bool = False,
    ) -> dict[str, bool]:
        """Remove the grant from the backends; idempotent.

        A RoleBinding already gone, an entity already out of the group, a group that no longer
        exists are all fine. ``role_binding_deleted``: :meth:`delete_grant_bindings` has deleted
        the RoleBinding already; only Vault is left. Returns ``{"role_binding_deleted": bool,
        "vault_member_removed": bool}`` (False: it was already gone). Raises ``actions.errors``
        errors when a backend cannot be reached or refuses (the caller retries).
        """
        deleted = role_binding_deleted or self._kube.delete_role_binding(
            kube_context, namespace, role_binding
        )
        removed = False
        if vault_group and vault_entity_id:
            if self._vault is None:
                raise PermanentError(
                    f"cannot remove the entity from Vault group {vault_group}: Vault is not "
                    "configured"
                )
            try:
                removed = self._vault.remove_group_member(vault_group, vault_entity_id)
            except NotFound:
                removed = False
        return {"role_binding_deleted": deleted, "vault_member_removed": removed}

    def delete_grant_bindings(
        self, kube_context: str | None, namespace: str, grant_ids: Sequence[int]
    ) -> set[int]:
        """Delete the RoleBindings of grants ``grant_ids`` in ``namespace`` in one call (a
        ``deletecollection`` selecting their grant-ID label); returns the IDs whose RoleBinding
        the API server answers it deleted. A grant left out (a RoleBinding made before the
        label, one already gone, an API server that answers a ``Status``) is for
        :meth:`revoke` to remove, one at a time. Raises ``actions.errors`` errors
        (``Forbidden`` without the ``deletecollection`` verb): the caller removes them one at a
        time instead.
        """
        if not grant_ids:
            return set()
        ids = ",".join(str(i) for i in sorted(set(grant_ids)))
        selector = f"{MANAGED_SELECTOR},{GRANT_ID_LABEL} in ({ids})"
        names = set(self._kube.delete_role_bindings(kube_context, namespace, selector))
        return {i for i in grant_ids if role_binding_name(i) in names}

    def managed_role_bindings(self, kube_context: str | None) -> list[dict[str, Any]]:
        """Every RoleBinding labelled ``app.kubernetes.io/managed-by=opsgate``, all namespaces."""
        return self._kube.list_role_bindings(kube_context, None, MANAGED_SELECTOR)

    @property
    def vault_configured(self) -> bool:
        """Whether Vault is configured (the Vault drift check has nothing to do without it)."""
        return self._vault is not None

    def vault_group_members(self, group: str) -> list[str]:
        """The entity IDs that are direct members of Vault identity group ``group``. Raises
        ``NotFound`` (no such group), ``PermanentError`` (Vault is not configured) and other
        ``actions.errors`` errors."""
        if self._vault is None:
            raise PermanentError(f"cannot list the members of Vault group {group}: no Vault")
        return self._vault.group_member_ids(group)

    def remove_vault_member(self, group: str, entity_id: str) -> bool:
        """Remove ``entity_id`` from Vault group ``group`` (drift); False if it was not a
        member. Raises ``actions.errors`` errors."""
        if self._vault is None:
            raise PermanentError(f"cannot remove a member of Vault group {group}: no Vault")
        return self._vault.remove_group_member(group, entity_id)

    def delete_role_binding(self, kube_context: str | None, namespace: str, name: str) -> bool:
        """Delete one RoleBinding (drift); False if it was already gone."""
        return self._kube.delete_role_binding(kube_context, namespace, name)
