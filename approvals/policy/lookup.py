"""What the policy says about the people and places of a request: the environment a namespace is
in, incident channels, agents (automation) and the members of groups. Pure functions of the
:data:`~approvals.policy.model.Policy` (and, for :func:`resolve_groups`, of a lookup given in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from approvals.policy.model import Policy, matches_any


class NamespaceError(Exception):
    """A namespace or ``--env`` that the policy does not place in exactly one environment."""


def resolve_environment(policy: Policy, namespace: str, env: str | None = None) -> str:
    """Return the name of the environment that holds ``namespace``.

    ``env`` (the ``--env`` option) picks one when the namespace is in several. Raises
    :class:`NamespaceError` for an unknown environment, a namespace in none of them, a namespace
    not in the environment given, or one in several without ``env``.
    """
    if env is not None:
        if env not in policy.environments:
            known = ", ".join(sorted(policy.environments))
            raise NamespaceError(f"unknown environment '{env}' (environments: {known})")
        if not matches_any(namespace, policy.environments[env].namespaces):
            raise NamespaceError(f"namespace '{namespace}' is not in environment '{env}'")
        return env
    found = [
        name
        for name, environment in policy.environments.items()
        if matches_any(namespace, environment.namespaces)
    ]
    if not found:
        raise NamespaceError(
            f"namespace '{namespace}' is in no environment of the policy; "
            "ask the platform team to add it"
        )
    if len(found) > 1:
        raise NamespaceError(
            f"namespace '{namespace}' is in several environments ({', '.join(found)}); "
            "pick one with --env"
        )
    return found[0]


def is_incident_channel(policy: Policy, channel_name: str | None) -> bool:
    """True when ``channel_name`` matches one of the policy's ``incident_channels`` globs."""
    return channel_name is not None and matches_any(channel_name, policy.incident_channels)


# --- agents -----------------------------------------------------------------------------------


def agent_of(policy: Policy, *ids: str | None) -> str | None:
    """The first of ``ids`` that the policy lists under ``agents``, or None (a person).

    ``ids`` are the Slack IDs a message, event or command carries, most specific first: the
    ``user`` (a bot user's ``U…`` too), the ``bot_id`` (``B…``) and the ``app_id`` (``A…``). The
    ID returned is the requester ID to record: the one the policy names.
    """
    return next((i for i in ids if i and i in policy.agents), None)


def requester_kind(
    policy: Policy, requester: str, claimed: Literal["human", "agent"] = "human"
) -> Literal["human", "agent"]:
    """``agent`` when ``claimed`` says so or the policy lists ``requester`` under ``agents``;
    the policy can make a requester automation, never a person."""
    return "agent" if claimed == "agent" or requester in policy.agents else "human"


# --- groups -----------------------------------------------------------------------------------


def static_groups(policy: Policy) -> dict[str, frozenset[str]]:
    """Each group's listed ``users`` only (Slack user groups unresolved)."""
    return {name: frozenset(group.users) for name, group in policy.groups.items()}


def resolve_groups(
    policy: Policy, usergroup_members: Callable[[str], frozenset[str]]
) -> dict[str, frozenset[str]]:
    """Each group's members: its ``users`` plus ``usergroup_members(S…)`` of each of its
    ``usergroups`` (``bot.usergroups.UsergroupDirectory.members`` resolves them through
    Slack's ``usergroups.users.list``)."""
    resolved: dict[str, frozenset[str]] = {}
    cache: dict[str, frozenset[str]] = {}
    for name, group in policy.groups.items():
        members = set(group.users)
        for usergroup in group.usergroups:
            if usergroup not in cache:
                cache[usergroup] = usergroup_members(usergroup)
            members |= cache[usergroup]
        resolved[name] = frozenset(members)
    return resolved
