"""Members of Slack user groups (``S…``), for the policy's ``groups: {usergroups: [...]}``.

:class:`UsergroupDirectory` asks Slack's ``usergroups.users.list`` (scope ``usergroups:read``) and
caches each answer for ``ttl`` seconds. The gate resolves a request's approvers with
``approvals.policy.resolve_groups(policy, directory.members)``; when a click comes from someone who
is not among them, it calls :meth:`UsergroupDirectory.refresh` and resolves again, so a person
just added to the on-call group may approve without waiting for the TTL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Entry:
    members: frozenset[str]
    fetched_at: float


class UsergroupDirectory:
    """Slack user group ID → member user IDs, cached for ``ttl`` seconds.

    ``clock`` returns seconds (monotonic). :meth:`refresh` forgets entries older than
    ``min_refresh`` seconds, so a burst of clicks from strangers cannot hammer Slack's rate limit.
    Thread-safe.
    """

    def __init__(
        self,
        client: WebClient,
        *,
        ttl: float = 300.0,
        min_refresh: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def members(self, usergroup_id: str) -> frozenset[str]:
        """The user IDs in ``usergroup_id``, from the cache when younger than ``ttl``.

        When Slack answers with an error or cannot be reached, the error is logged and the last
        known members are returned (or an empty set when there are none): a Slack outage must not
        make anyone an approver, and never raises.
        """
        now = self._clock()
        with self._lock:
            entry = self._cache.get(usergroup_id)
        if entry is not None and now - entry.fetched_at < self._ttl:
            return entry.members
        try:
            response = self._client.usergroups_users_list(usergroup=usergroup_id)
            users = response.get("users") or []
        except (SlackClientError, OSError) as exc:
            log.error(
                "cannot list the members of Slack user group %s: %s; using %s",
                usergroup_id,
                exc,
                "the cached members" if entry is not None else "nobody",
            )
            return entry.members if entry is not None else frozenset()
        members = frozenset(str(u) for u in users)
        with self._lock:
            self._cache[usergroup_id] = _Entry(members, now)
        return members

    __call__ = members
    """The directory is the ``usergroup_members`` callable of ``resolve_groups``."""

    def refresh(self) -> None:
        """Forget cached members older than ``min_refresh`` seconds (all of them with
        ``min_refresh=0``); the next :meth:`members` asks Slack again."""
        now = self._clock()
        with self._lock:
            self._cache = {
                key: entry
                for key, entry in self._cache.items()
                if now - entry.fetched_at < self._min_refresh
            }

    def cached(self) -> dict[str, frozenset[str]]:
        """A copy of the cache: user group ID → members (for ``/readyz`` and tests)."""
        with self._lock:
            return {key: entry.members for key, entry in self._cache.items()}
