"""The one base policy of the tests, and how a test extends it.

:data:`POLICY` is what the bot runs unless a module says otherwise (the ``policy_text`` fixture
of ``tests/conftest.py``); a module that needs other groups, environments or rules derives its
policy from the same base with :func:`policy`, changing only what it needs::

    POLICY = policy(
        RULES,                                     # the module's own rules
        settings={"incident_channels": None},      # None removes an entry of the base
        groups={"oncall": "{users: [U0ONCALL]}"},  # a string adds or replaces one (YAML)
    )

The text keeps the base's layout (one line per entry, a blank line between sections), so the
line numbers the policy cites in its answers only move where a module changes the policy.
"""

from __future__ import annotations

from collections.abc import Mapping

Entries = Mapping[str, str | None]

BASE_SETTINGS: dict[str, str] = {
    "version": "1",
    "approval_channel": "C0APPROVALS",
    "audit_channel": "C0AUDIT",
    "incident_channels": '["inc-*"]',
}
BASE_GROUPS: dict[str, str] = {
    "sre": "{users: [U0SRE1, U0SRE2]}",
    "security": "{users: [U0SEC1]}",
}
BASE_ENVIRONMENTS: dict[str, str] = {
    "prod": "{kube_context: prod, namespaces: [payments, checkout]}",
    "staging": '{kube_context: staging, namespaces: ["staging-*"]}',
    "sandbox": "{kube_context: staging, namespaces: [sandbox]}",
}
BASE_RULES = """\
  - match: {action: restart, environment: staging}
    approval: auto
  - name: checkout needs two
    match: {action: restart, environment: prod, namespace: checkout}
    approvers: [sre]
    min_approvals: 2
  - match: {action: restart, environment: prod}
    approvers: [sre]
"""

# A section several modules add: the year-end change freeze (rollbacks allowed).
YEAR_END_FREEZE = """\
freezes:
  - name: year-end
    start: "2026-12-20 00:00"
    end: "2027-01-04 00:00"
    timezone: Europe/Berlin
    reason: "year-end change freeze"
    allow: [rollback]
"""


def _changed(base: Mapping[str, str], changes: Entries, section: str) -> dict[str, str]:
    """``base`` with ``changes``: a string value is added (at the end) or replaced (in place),
    None removes the entry. Raises ``KeyError`` for removing what ``base`` does not have."""
    result = dict(base)
    for key, value in changes.items():
        if value is None:
            if key not in result:
                raise KeyError(f"{section}: the base policy has no {key!r} to remove")
            del result[key]
        else:
            result[key] = value
    return result


def _section(name: str, entries: Mapping[str, str], *, aligned: bool = False) -> str:
    width = max(map(len, entries)) if aligned else 0
    lines = [f"  {key + ':':<{width + 1}} {value}" for key, value in entries.items()]
    return f"{name}:\n" + "\n".join(lines) + "\n"


def policy(
    rules: str = BASE_RULES,
    *,
    settings: Entries | None = None,
    groups: Entries | None = None,
    agents: Entries | None = None,
    identities: Entries | None = None,
    environments: Entries | None = None,
    sections: str = "",
    spaced: bool = True,
) -> str:
    """The text of the base policy with changes (see the module docstring).

    ``settings`` are the top-level scalars (``version``, ``approval_channel``, ``rate_limit``...),
    ``groups``, ``agents``, ``identities`` and ``environments`` the entries of those sections
    (each value the YAML of one entry, on one line); ``rules`` replaces the base's rules (the
    items, indented two spaces as :data:`BASE_RULES`); ``sections`` (``freezes:`` and the like)
    go verbatim before ``rules``; ``spaced=False`` leaves out the blank lines between sections
    (and the alignment of the environments). Raises ``KeyError`` for removing an entry the base
    lacks.
    """
    top = _changed(BASE_SETTINGS, settings or {}, "settings")
    parts = ["".join(f"{key}: {value}\n" for key, value in top.items())]
    for name, base, changes in (
        ("groups", BASE_GROUPS, groups),
        ("agents", {}, agents),
        ("identities", {}, identities),
        ("environments", BASE_ENVIRONMENTS, environments),
    ):
        entries = _changed(base, changes or {}, name)
        if entries:
            parts.append(_section(name, entries, aligned=spaced and name == "environments"))
    if sections:
        parts.append(sections)
    parts.append("rules:\n" + rules)
    return ("\n" if spaced else "").join(parts)


POLICY = policy()
