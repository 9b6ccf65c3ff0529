"""The drift check of Vault: members of opsgate's identity groups that no active grant accounts for.

:class:`VaultDriftCheck` is run with the RoleBinding drift check (:mod:`approvals.drift`) by
:meth:`approvals.grants.GrantService.drift_check`. It lists the direct members
(``member_entity_ids``) of each Vault identity group that the policy's access rules name in
``vault_groups``, except the groups whose entry says ``members_managed_elsewhere: true``; then
reads, in one query, the grants active or being revoked of all those groups (and the access
requests being executed, whose grant is not recorded yet); then removes, audits
(``drift_removed``) and reports every member that none of them accounts for. A dedicated group
(no marking) therefore holds only the members of opsgate grants: a member someone added by hand
is drift, even one that was there before any grant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from actions.access import KIND, Access
from actions.access_settings import AccessSettings
from actions.errors import ActionError, NotFound
from approvals import metrics
from approvals.drift import DRIFT_REMOVED
from approvals.lifecycle import SYSTEM, record_detached
from approvals.models import Grant, GrantStatus, Request, Status
from approvals.notifier import GrantView
from approvals.policy.model import Policy

log = logging.getLogger(__name__)

_EXECUTING = (Status.APPROVED.value, Status.EXECUTING.value)
_HELD = (GrantStatus.ACTIVE.value, GrantStatus.REVOKING.value)


def policy_vault_groups(policy: Policy) -> dict[str, bool]:
    """Every Vault identity group the policy's rules name in ``vault_groups`` -> whether its
    members are managed elsewhere (True when any rule marks it so: the drift check then leaves
    the group alone)."""
    out: dict[str, bool] = {}
    for rule in policy.rules:
        settings = rule.kind_settings(KIND)
        if not isinstance(settings, AccessSettings):
            continue
        for group, elsewhere in settings.managed_elsewhere().items():
            out[group] = out.get(group, False) or elsewhere
    return out


@dataclass(frozen=True)
class _Stray:
    """A member of a Vault group that no grant accounts for."""

    group: str
    entity_id: str

    @property
    def path(self) -> str:
        """``vault:<group>/<entity ID>``."""
        return f"vault:{self.group}/{self.entity_id}"

    def detail(self) -> dict[str, Any]:
        """The audit detail of its removal."""
        return {
            "vault_group": self.group,
            "vault_entity_id": self.entity_id,
            "why": "no active opsgate grant accounts for this member of a group dedicated to "
            "opsgate grants",
        }

    def view(self, now: datetime) -> GrantView:
        """A view of the removal, for the drift report (no grant: ID 0, no grantee)."""
        return GrantView(
            id=0,
            grantee_id="",
            environment=None,
            kube_context=None,
            namespace="",
            role="",
            kubernetes_user="",
            role_binding="",
            vault_group=self.group,
            vault_entity=self.entity_id,
            status="drift",
            started_at=now,
            expires_at=now,
            duration_seconds=0,
            max_duration_seconds=None,
            revoke_reason="drift: no active grant accounts for this member",
        )


class VaultDriftCheck:
    """The drift check of the Vault groups ``groups`` returns (name -> members managed
    elsewhere). ``sessions``, ``access`` and ``clock`` are the grant service's; ``notify``
    reports one removal (``drift_removed``)."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        access: Access,
        clock: Callable[[], datetime],
        groups: Callable[[], Mapping[str, bool]],
        notify: Callable[[GrantView, str], None],
    ) -> None:
        self._sessions = sessions
        self._access = access
        self._clock = clock
        self._groups = groups
        self._notify = notify

    def run(self) -> list[str]:
        """Remove the members of the dedicated Vault groups that no grant accounts for.

        Nothing without Vault. One ``GET identity/group/name/<group>`` per group (a group that
        cannot be read is logged and skipped), then one query for the grants active or being
        revoked of all the groups and one for the access requests being executed, read after
        listing (a grant activated meanwhile is seen, never taken for drift). Returns
        ``"vault:<group>/<entity ID>"`` of each member removed.
        """
        if not self._access.vault_configured:
            return []  # rules with vault_groups refuse their requests: nothing to check
        dedicated = sorted(g for g, elsewhere in self._groups().items() if not elsewhere)
        members: dict[str, list[str]] = {}
        for group in dedicated:
            try:
                members[group] = self._access.vault_group_members(group)
            except NotFound as exc:
                log.warning("Vault drift check: group %s: %s", group, exc)
            except ActionError as exc:
                log.warning("Vault drift check: cannot list the members of %s: %s", group, exc)
        if not any(members.values()):
            return []
        held = self._accounted(list(members))
        strays = [
            _Stray(group, entity_id)
            for group, ids in members.items()
            for entity_id in dict.fromkeys(ids)
            if (group, entity_id) not in held
        ]
        return self._remove(strays)

    def _accounted(self, groups: Sequence[str]) -> set[tuple[str, str]]:
        """``(group, entity ID)`` of every grant of ``groups`` active or being revoked (one
        query), and of every access request being executed (one query: its membership may be
        in place before its grant is recorded)."""
        held: set[tuple[str, str]] = set()
        with self._sessions() as session:
            for group, entity_id in session.execute(
                select(Grant.vault_group, Grant.vault_entity_id).where(
                    Grant.status.in_(_HELD), Grant.vault_group.in_(groups)
                )
            ):
                if group and entity_id:
                    held.add((group, entity_id))
            for (preview,) in session.execute(
                select(Request.preview).where(
                    Request.status.in_(_EXECUTING), Request.action == KIND.name
                )
            ):
                facts = (preview or {}).get("facts") or {}
                group, entity_id = facts.get("vault_group"), facts.get("vault_entity_id")
                if group and entity_id:
                    held.add((str(group), str(entity_id)))
        return held

    def _remove(self, strays: Sequence[_Stray]) -> list[str]:
        """Remove ``strays`` from their groups, audit the removals in one transaction, then
        report each (``drift_removed``)."""
        removed: list[_Stray] = []
        for stray in strays:
            try:
                if self._access.remove_vault_member(stray.group, stray.entity_id):
                    removed.append(stray)
            except ActionError as exc:
                log.warning(
                    "Vault drift check: cannot remove %s from %s: %s",
                    stray.entity_id,
                    stray.group,
                    exc,
                )
        if not removed:
            return []
        now = self._clock()
        with self._sessions.begin() as session:
            for stray in removed:
                record_detached(
                    session,
                    event=DRIFT_REMOVED,
                    actor=SYSTEM,
                    now=now,
                    action=KIND.name,
                    target=f"Vault group {stray.group}",
                    detail=stray.detail(),
                )
        for stray in removed:
            log.warning(
                "Vault drift check: removed entity %s from group %s (no active grant)",
                stray.entity_id,
                stray.group,
            )
            metrics.DRIFT_CORRECTIONS.inc()  # metrics
            self._notify(stray.view(now), DRIFT_REMOVED)
        return [stray.path for stray in removed]
