"""Time-bound access grants: activation, expiry, early revocation, extension, drift.

The database is the source of truth: a grant ends when ``grants.expires_at`` has passed, whatever
a scheduler remembers (:mod:`approvals.expiry` only wakes :meth:`GrantService.sweep` on time). The
sweep selects overdue rows in batches, as Prefect's ``pause_expirations`` service does, and is
idempotent.

Exactly once, with any number of bot instances on one database: a grant is first *claimed* by a
guarded ``UPDATE grants SET status = 'revoking' … WHERE id IN (…) AND status = 'active'
RETURNING id`` (on PostgreSQL the candidates are read ``FOR UPDATE SKIP LOCKED``, so two sweeps
share the work instead of queueing), then removed from the backends (idempotent: a RoleBinding
already gone, an entity already out of the group are fine; the RoleBindings of a batch in one
namespace in one ``deletecollection`` call, by their grant-ID label), then moved
``revoking → revoked`` together with its request's ``active → revoked`` transition and audit
event: one transaction for a whole batch of claimed grants (a guarded ``UPDATE … WHERE id IN (…)
AND status = 'revoking' RETURNING id`` decides which ends a call records), so 1,000 grants that
end together cost a few transactions, not 2,000, and a few Kubernetes requests, not 1,000.
A claim whose process died before the end (a ``revoking`` row untouched for ``retry_after``
seconds) is claimed again by the next sweep; so is one whose backend call failed.

Why a grant ended is stored when it is claimed (``revoke_reason``): ``expired``, ``revoked early
by <@U…>: <reason>`` or ``drift: …``; the audit event says when (``revoked_at``) and how late
(``lag_seconds`` after ``expires_at``).

The package: :mod:`~approvals.grants.common` (errors, the scheduler's protocol, the names of a
grant's ends), :mod:`~approvals.grants.revocation` (claim, remove, record: the batches above)
and :mod:`~approvals.grants.service` (:class:`GrantService`, which tells people and its
subscribers, :meth:`GrantService.subscribe`).
"""

from approvals.grants.common import (
    ENDED,
    EXPIRED,
    REVOKED,
    ExtensionRefused,
    GrantBackendError,
    GrantError,
    GrantListener,
    GrantNotActive,
    GrantScheduling,
    UnknownGrant,
    extension_refusal,
)
from approvals.grants.service import GrantService
from approvals.notifier import GrantView

__all__ = [
    "ENDED",
    "EXPIRED",
    "REVOKED",
    "ExtensionRefused",
    "GrantBackendError",
    "GrantError",
    "GrantListener",
    "GrantNotActive",
    "GrantScheduling",
    "GrantService",
    "GrantView",
    "UnknownGrant",
    "extension_refusal",
]
