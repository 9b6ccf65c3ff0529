"""The approval policy: its file format, loading and validation with line numbers, the pure
decision, and the lint of ``opsgate policy check``.

The policy is a YAML file kept in git (``OPSGATE_POLICY``, default ``./policy.yml``); its format is
documented in ``docs/policy.md``. The package's rooms:

- :mod:`~approvals.policy.model`: the file's sections as pydantic models; the request kinds it
  knows (from ``actions.registry.KINDS``), their reversibility and rule settings;
- :mod:`~approvals.policy.loading`: :func:`load_policy` reads and validates a file (the only
  module that reads one) and returns a :class:`LoadedPolicy` carrying the SHA-256 of the file's
  bytes, which every request and audit event records; :mod:`~approvals.policy.validation`
  holds the checks pydantic cannot make alone;
- :mod:`~approvals.policy.lookup`: environments, incident channels, agents, group members;
- :mod:`~approvals.policy.decision` and :mod:`~approvals.policy.rules`: :func:`decide`, a pure
  function made of an ordered list of decision rules (policy, request context and the groups'
  members in, frozen :class:`Decision` out), and :func:`count_satisfied`, whether approvals
  satisfy a decision's steps;
- :mod:`~approvals.policy.lint`: :func:`policy_warnings`, rules that can never match and groups
  nobody is in (``opsgate policy check``).

Everything is re-exported here: ``from approvals.policy import decide`` is the way to use it.
The package does no I/O but reading the policy file (import-linter keeps it so).
"""

from __future__ import annotations

from actions.durations import format_duration, parse_duration
from approvals.policy.decision import (
    Decision,
    DecisionReason,
    Outcome,
    Refusal,
    RequestContext,
    Step,
    approval_refusal,
    count_satisfied,
    explain_mismatches,
    step_members,
)
from approvals.policy.lint import freeze_window_text, policy_warnings, seconds_text
from approvals.policy.loading import load_policy, parse_policy
from approvals.policy.lookup import (
    NamespaceError,
    agent_of,
    is_incident_channel,
    requester_kind,
    resolve_environment,
    resolve_groups,
    static_groups,
)
from approvals.policy.model import (
    DEFAULT_PENDING_TTL,
    DEFAULT_REASON_MIN_LENGTH,
    DEFAULT_REQUESTS_PER_MINUTE,
    KNOWN_ACTIONS,
    REVERSIBLE,
    Agent,
    Autonomy,
    Freeze,
    LoadedPolicy,
    Policy,
    PolicyError,
    PolicyIssue,
    RateLimit,
    Rule,
    ServiceAccountRef,
    is_reversible,
    request_reversible,
)
from approvals.policy.rules import DECISION_RULES, decide

__all__ = [
    "DECISION_RULES",
    "DEFAULT_PENDING_TTL",
    "DEFAULT_REASON_MIN_LENGTH",
    "DEFAULT_REQUESTS_PER_MINUTE",
    "KNOWN_ACTIONS",
    "REVERSIBLE",
    "Agent",
    "Autonomy",
    "Decision",
    "DecisionReason",
    "Freeze",
    "LoadedPolicy",
    "NamespaceError",
    "Outcome",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "RateLimit",
    "Refusal",
    "RequestContext",
    "Rule",
    "ServiceAccountRef",
    "Step",
    "agent_of",
    "approval_refusal",
    "count_satisfied",
    "decide",
    "explain_mismatches",
    "format_duration",
    "freeze_window_text",
    "is_incident_channel",
    "is_reversible",
    "load_policy",
    "parse_duration",
    "parse_policy",
    "policy_warnings",
    "request_reversible",
    "requester_kind",
    "resolve_environment",
    "resolve_groups",
    "seconds_text",
    "static_groups",
    "step_members",
]
