"""Unit tests of ``approvals.policy``: the file format, its validation errors, and the decision.

Parametrized tables for the rules of the format and for every feature of a rule, plus hypothesis
properties of :func:`decide` over random policies and requests.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from approvals.policy import (
    KNOWN_ACTIONS,
    REVERSIBLE,
    DecisionReason,
    LoadedPolicy,
    NamespaceError,
    Outcome,
    Policy,
    PolicyError,
    RequestContext,
    Step,
    count_satisfied,
    decide,
    explain_mismatches,
    format_duration,
    is_incident_channel,
    is_reversible,
    load_policy,
    parse_duration,
    parse_policy,
    policy_warnings,
    resolve_environment,
    resolve_groups,
    static_groups,
)
from tests.helpers.policy_cases import (
    FREEZE_END,
    FREEZE_START,
    GROUPS,
    PROPERTY_SETTINGS,
    USERS,
    _listed,
    cases,
    first_match,
)

# The first example policy opsgate was built against, with every early section (groups,
# identities, environments, rules); docs/policy.md documents each field.
DESIGN_POLICY = """\
version: 1
approval_channel: C0APPROVALS          # default channel for approval requests
audit_channel: C0AUDIT                 # optional: every decision and execution mirrored here
incident_channels: ["inc-*", "incident-*"]

groups:                                # approver groups
  sre: {users: [U0SRE1, U0SRE2], usergroups: [S0ONCALL]}
  security: {users: [U0SEC1, U0SEC2]}

identities:                            # Slack user -> identities in the backends
  U0DEV1: {kubernetes_user: alice@example.com, vault_entity: alice}

environments:
  prod:    {kube_context: prod, namespaces: [payments, checkout]}
  staging: {kube_context: staging, namespaces: ["staging-*"]}

rules:                                 # first match wins; no match means denied
  - match: {action: restart, environment: staging}
    approval: auto
  - match: {action: [restart, scale, rollback], environment: prod}
    approvers: [sre]
    min_approvals: 1
  - match: {action: rollback, environment: prod, channel: incident}
    approvers: [sre]
    min_approvals: 1
  - match: {action: scale, environment: prod}
    approvers: [sre]
    limits: {min_replicas: 2, max_replicas: 50}
  - match: {action: access, environment: prod}
    approvers: [sre]
    max_duration: 4h
    roles: [view, edit]
  - match: {action: rotate, path: "secret/prod/*"}
    approvers: [security]
    min_approvals: 2
"""

# A small valid policy whose lines the error tests below refer to. Rule 3 (rules[2]) starts on
# line 14; its outcome key is on line 15.
SMALL_POLICY = """\
version: 1
approval_channel: C0APPROVALS
groups:
  sre: {users: [U0SRE1]}
environments:
  prod: {namespaces: [payments]}
  staging: {namespaces: ["staging-*"]}
rules:
  - match: {action: restart, environment: staging}
    approval: auto
  - match: {action: scale, environment: prod}
    approvers: [sre]
    min_approvals: 1
  - match: {action: restart, environment: prod}
    approvers: [sre]
"""


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the only line of ``text`` that contains ``needle``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    assert len(hits) == 1, f"{needle!r} found on lines {hits}"
    return hits[0]


def policy_error(text: str | bytes) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    return info.value


# --- a valid policy ----------------------------------------------------------------------------


def test_design_example_parses_with_every_section() -> None:
    loaded = parse_policy(DESIGN_POLICY)
    policy = loaded.policy
    assert policy.version == 1
    assert policy.approval_channel == "C0APPROVALS"
    assert policy.audit_channel == "C0AUDIT"
    assert policy.incident_channels == ["inc-*", "incident-*"]
    assert policy.groups["sre"].users == ["U0SRE1", "U0SRE2"]
    assert policy.groups["sre"].usergroups == ["S0ONCALL"]
    assert policy.groups["security"].usergroups == []
    assert policy.identities["U0DEV1"].kubernetes_user == "alice@example.com"
    assert policy.identities["U0DEV1"].vault_entity == "alice"
    assert policy.environments["prod"].kube_context == "prod"
    assert policy.environments["prod"].namespaces == ["payments", "checkout"]
    assert policy.environments["staging"].namespaces == ["staging-*"]
    assert len(policy.rules) == 6


def test_design_example_rules_keep_their_fields() -> None:
    rules = parse_policy(DESIGN_POLICY).policy.rules
    # A scalar stands for a one-item list.
    assert rules[0].match.action == ["restart"]
    assert rules[0].match.environment == ["staging"]
    assert rules[0].approval == "auto"
    assert rules[1].match.action == ["restart", "scale", "rollback"]
    assert rules[1].approvers == ["sre"]
    assert rules[2].match.channel == "incident"
    assert rules[1].match.channel == "any"
    assert rules[3].limits is not None
    assert (rules[3].limits.min_replicas, rules[3].limits.max_replicas) == (2, 50)
    assert rules[4].max_duration == "4h"
    assert rules[4].roles == ["view", "edit"]
    assert rules[5].match.path == ["secret/prod/*"]
    assert rules[5].min_approvals == 2
    assert rules[5].match.environment is None


def test_design_example_rule_lines_and_labels() -> None:
    loaded = parse_policy(DESIGN_POLICY, source="policies/prod.yml")
    assert loaded.source == "policies/prod.yml"
    expected = tuple(
        i + 1 for i, line in enumerate(DESIGN_POLICY.splitlines()) if line.startswith("  - match:")
    )
    assert len(expected) == 6
    assert loaded.rule_lines == expected
    assert loaded.rule_label(0) == f"rules[0] (line {expected[0]})"
    assert loaded.rule_label(5) == f"rules[5] (line {expected[5]})"


def test_rule_label_names_a_named_rule() -> None:
    text = SMALL_POLICY.replace(
        "  - match: {action: scale, environment: prod}",
        "  - name: prod scaling\n    match: {action: scale, environment: prod}",
    )
    loaded = parse_policy(text)
    assert loaded.rule_label(1) == "rules[1] 'prod scaling' (line 11)"
    assert loaded.rule_label(2) == "rules[2] (line 15)"


@pytest.mark.parametrize("as_bytes", [False, True])
def test_sha256_is_that_of_the_bytes(as_bytes: bool) -> None:
    text = DESIGN_POLICY + "# café\n"
    raw = text.encode()
    loaded = parse_policy(raw if as_bytes else text)
    assert loaded.sha256 == hashlib.sha256(raw).hexdigest()


def test_sha256_changes_with_a_comment() -> None:
    assert parse_policy(SMALL_POLICY).sha256 != parse_policy(SMALL_POLICY + "# x\n").sha256


def test_load_policy_reads_the_file_and_hashes_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    raw = DESIGN_POLICY.replace("\n", "\r\n").encode()  # the hash is of the bytes, CRLF included
    path.write_bytes(raw)
    loaded = load_policy(path)
    assert loaded.sha256 == hashlib.sha256(raw).hexdigest()
    assert loaded.source == str(path)
    assert len(loaded.policy.rules) == 6
    assert load_policy(str(path)).sha256 == loaded.sha256


def test_load_policy_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    assert "cannot read the policy" in str(info.value)
    assert info.value.issues[0].field == "(file)"


def test_load_policy_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(SMALL_POLICY.replace("min_approvals: 1", "min_approvals: 0"))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"{path}:13: rules[1].min_approvals: ")


# --- invalid policies: each error names the field and the 1-based line -------------------------


def _replace(old: str, new: str) -> str:
    assert SMALL_POLICY.count(old) == 1, old
    return SMALL_POLICY.replace(old, new)


RULE3 = "  - match: {action: restart, environment: prod}\n    approvers: [sre]\n"


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        pytest.param(
            _replace(
                RULE3, "  - match: {action: restart, environment: prod}\n    aprovers: [sre]\n"
            ),
            15,
            "rules[2].aprovers",
            ["Extra inputs are not permitted"],
            id="typo-key-in-rule-3",
        ),
        pytest.param(
            _replace(
                RULE3, "  - match: {action: restart, environment: prod}\n    approvers: [ops]\n"
            ),
            15,
            "rules[2].approvers[0]",
            ["unknown group 'ops'", "groups: sre"],
            id="unknown-group",
        ),
        pytest.param(
            _replace(
                RULE3,
                "  - match: {action: restart, environment: prod}\n"
                "    approvers:\n"
                "      - sre\n"
                "      - dbas\n",
            ),
            17,
            "rules[2].approvers[1]",
            ["unknown group 'dbas'"],
            id="unknown-group-second-item-own-line",
        ),
        pytest.param(
            _replace(
                RULE3, "  - match: {action: restart, environment: qa}\n    approvers: [sre]\n"
            ),
            14,
            "rules[2].match.environment[0]",
            ["unknown environment 'qa'", "prod, staging"],
            id="unknown-environment",
        ),
        pytest.param(
            _replace(
                RULE3, "  - match: {action: reboot, environment: prod}\n    approvers: [sre]\n"
            ),
            14,
            "rules[2].match.action[0]",
            ["unknown action 'reboot'", "restart, scale, rollback, access, rotate"],
            id="unknown-action",
        ),
        pytest.param(
            _replace(
                RULE3,
                "  - match:\n"
                "      action: [restart, reboot]\n"
                "      environment: prod\n"
                "    approvers: [sre]\n",
            ),
            15,
            "rules[2].match.action[1]",
            ["unknown action 'reboot'"],
            id="unknown-action-in-list",
        ),
        pytest.param(
            _replace(RULE3, RULE3 + "    approval: auto\n"),
            14,
            "rules[2]",
            ["exactly one outcome"],
            id="two-outcomes",
        ),
        pytest.param(
            _replace(RULE3, RULE3 + '    deny: "no"\n'),
            14,
            "rules[2]",
            ["exactly one outcome"],
            id="approvers-and-deny",
        ),
        pytest.param(
            _replace(RULE3, "  - match: {action: restart, environment: prod}\n    name: x\n"),
            14,
            "rules[2]",
            ["exactly one outcome"],
            id="no-outcome",
        ),
        pytest.param(
            _replace(RULE3, "  - match: {action: restart, environment: prod}\n    approvers: []\n"),
            14,
            "rules[2]",
            ["exactly one outcome"],
            id="empty-approvers-is-no-outcome",
        ),
        pytest.param(
            _replace("    min_approvals: 1\n", "    min_approvals: 0\n"),
            13,
            "rules[1].min_approvals",
            ["greater than or equal to 1"],
            id="min-approvals-0",
        ),
        pytest.param(
            _replace(RULE3, RULE3 + "    max_duration: 1.5h\n"),
            16,
            "rules[2].max_duration",
            ["'1.5h' is not a duration"],
            id="bad-max-duration",
        ),
        pytest.param(
            _replace(RULE3, RULE3 + "    max_duration: 0m\n"),
            16,
            "rules[2].max_duration",
            ["not a positive duration"],
            id="zero-max-duration",
        ),
        pytest.param(
            _replace("version: 1\n", "version: 2\n"),
            1,
            "version",
            ["Input should be 1"],
            id="version-2",
        ),
        pytest.param(
            _replace(
                "environments:\n  prod: {namespaces: [payments]}\n"
                '  staging: {namespaces: ["staging-*"]}\n',
                "",
            ).replace("environment: staging", "namespace: x"),
            1,
            "environments",
            ["Field required"],
            id="missing-environments",
        ),
        pytest.param(
            _replace("approval_channel: C0APPROVALS\n", "approval_channel: C0A\nauditchannel: C\n"),
            3,
            "auditchannel",
            ["Extra inputs are not permitted"],
            id="top-level-typo",
        ),
        pytest.param(
            _replace(RULE3, RULE3.replace("prod}", "prod, channel: incidents}")),
            14,
            "rules[2].match.channel",
            ["'incident' or 'any'"],
            id="bad-channel",
        ),
        pytest.param(
            _replace("  sre: {users: [U0SRE1]}\n", "  sre: {user: [U0SRE1]}\n"),
            4,
            "groups.sre.user",
            ["Extra inputs are not permitted"],
            id="typo-in-group",
        ),
        pytest.param(
            _replace("  prod: {namespaces: [payments]}\n", "  prod: {kube_context: prod}\n"),
            6,
            "environments.prod.namespaces",
            ["Field required"],
            id="environment-without-namespaces",
        ),
        pytest.param(
            _replace("  prod: {namespaces: [payments]}\n", "  prod:\n    kube_context: prod\n"),
            6,
            "environments.prod.namespaces",
            ["Field required"],
            id="block-style-mapping-names-its-key-line",
        ),
    ],
)
def test_invalid_policy_names_field_and_line(
    text: str, line: int, field: str, words: list[str]
) -> None:
    error = policy_error(text)
    issue = next((i for i in error.issues if i.field == field), None)
    assert issue is not None, [i.field for i in error.issues]
    assert issue.line == line
    for word in words:
        assert word in issue.message
    assert f"policy.yml:{line}: {field}: " in str(error)


def test_every_problem_is_reported_at_once() -> None:
    text = _replace("version: 1\n", "version: 2\n").replace(
        "    min_approvals: 1\n", "    min_approvals: 0\n"
    )
    error = policy_error(text)
    assert {(i.field, i.line) for i in error.issues} == {
        ("version", 1),
        ("rules[1].min_approvals", 13),
    }
    assert str(error).count("\n") == 1


def test_cross_reference_problems_are_all_reported() -> None:
    text = _replace("approvers: [sre]\n    min_approvals", "approvers: [ops]\n    min_approvals")
    text = text.replace(
        "{action: restart, environment: prod}", "{action: restart, environment: qa}"
    )
    error = policy_error(text)
    assert {(i.field, i.line) for i in error.issues} == {
        ("rules[1].approvers[0]", 12),
        ("rules[2].match.environment[0]", 14),
    }


def test_yaml_syntax_error_names_its_line() -> None:
    text = _replace("  sre: {users: [U0SRE1]}\n", "  sre: {users: [U0SRE1}\n")
    error = policy_error(text)
    assert len(error.issues) == 1
    assert error.issues[0].field == "(yaml)"
    assert error.issues[0].line == 4
    assert str(error).startswith("policy.yml:4: (yaml): ")


def test_yaml_bad_indentation_names_its_line() -> None:
    text = _replace("    min_approvals: 1\n", "   min_approvals: 1\n")
    error = policy_error(text)
    assert error.issues[0].field == "(yaml)"
    assert error.issues[0].line == 13


def test_a_key_given_twice_is_an_error_not_a_silent_override() -> None:
    text = _replace(
        "    approvers: [sre]\n    min_approvals: 1\n", "    approvers: [sre]\n    approvers: [x]\n"
    )
    error = policy_error(text)
    assert error.issues[0].field == "(yaml)"
    assert error.issues[0].line == 13
    assert "the key 'approvers' is given twice" in str(error)
    assert "<unicode string>" not in str(error)


def test_scale_limits_must_be_ordered() -> None:
    text = _replace(
        "    min_approvals: 1\n",
        "    min_approvals: 1\n    limits: {min_replicas: 5, max_replicas: 2}\n",
    )
    error = policy_error(text)
    assert error.issues[0].field == "rules[1].limits"
    assert error.issues[0].line == 14  # the line of limits:
    assert "min_replicas is greater than max_replicas" in str(error)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("- version: 1\n- rules: []\n", id="list"),
        pytest.param("just a string\n", id="scalar"),
        pytest.param("", id="empty"),
        pytest.param("# only a comment\n", id="comment"),
    ],
)
def test_document_that_is_not_a_mapping(text: str) -> None:
    error = policy_error(text)
    assert [(i.line, i.field) for i in error.issues] == [(1, "(top level)")]
    assert "must be a mapping" in str(error)


def test_not_utf8() -> None:
    error = policy_error(b"version: 1\napproval_channel: \xff\n")
    assert error.issues[0].field == "(file)"
    assert "UTF-8" in str(error)


def test_source_is_used_in_messages() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("version: 2\n", source="conf/ops.yml")
    assert info.value.source == "conf/ops.yml"
    assert str(info.value).startswith("conf/ops.yml:1: version: ")


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1d", 86400),
        ("90s", 90),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
        ("0h5m", 300),
        (" 45m ", 2700),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "   ", "0m", "0h0m", "abc", "1.5h", "-1h", "30", "m", "1w", "30m1h", "2H", "1 h"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_duration_error_shows_accepted_forms() -> None:
    with pytest.raises(ValueError, match="30m, 2h, 1h30m"):
        parse_duration("soon")


# --- environments ------------------------------------------------------------------------------

ENV_POLICY = parse_policy(
    """\
version: 1
approval_channel: C0A
incident_channels: ["inc-*", "incident-*", "war-room"]
environments:
  prod: {namespaces: [payments, checkout, shared]}
  staging: {namespaces: ["staging-*", shared]}
  dev: {namespaces: ["dev-?", "team-[ab]"]}
rules:
  - match: {action: restart}
    approval: auto
"""
).policy


@pytest.mark.parametrize(
    ("namespace", "env", "expected"),
    [
        ("payments", None, "prod"),
        ("checkout", None, "prod"),
        ("staging-web", None, "staging"),
        ("staging-", None, "staging"),
        ("dev-1", None, "dev"),
        ("team-b", None, "dev"),
        ("shared", "prod", "prod"),
        ("shared", "staging", "staging"),
        ("payments", "prod", "prod"),
        ("staging-api", "staging", "staging"),
    ],
)
def test_resolve_environment(namespace: str, env: str | None, expected: str) -> None:
    assert resolve_environment(ENV_POLICY, namespace, env) == expected


@pytest.mark.parametrize(
    ("namespace", "env", "words"),
    [
        ("billing", None, ["'billing'", "no environment"]),
        ("staging", None, ["'staging'", "no environment"]),  # the glob needs the dash
        ("dev-10", None, ["'dev-10'", "no environment"]),  # ? is one character
        ("team-c", None, ["'team-c'", "no environment"]),
        ("Payments", None, ["no environment"]),  # case-sensitive
        ("shared", None, ["several environments", "prod, staging", "--env"]),
        ("payments", "staging", ["'payments' is not in environment 'staging'"]),
        ("payments", "qa", ["unknown environment 'qa'", "dev, prod, staging"]),
    ],
)
def test_resolve_environment_errors(namespace: str, env: str | None, words: list[str]) -> None:
    with pytest.raises(NamespaceError) as info:
        resolve_environment(ENV_POLICY, namespace, env)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("inc-1234", True),
        ("incident-db", True),
        ("war-room", True),
        ("inc-", True),
        ("general", False),
        ("incident", False),
        ("my-inc-1", False),
        ("war-room-2", False),
        ("INC-1", False),
        (None, False),
        ("", False),
    ],
)
def test_is_incident_channel(channel: str | None, expected: bool) -> None:
    assert is_incident_channel(ENV_POLICY, channel) is expected


def test_no_incident_channels_configured() -> None:
    policy = parse_policy(SMALL_POLICY).policy
    assert is_incident_channel(policy, "inc-1") is False


# --- the decision ------------------------------------------------------------------------------

DECIDE_POLICY_TEXT = """\
version: 1
approval_channel: C0DEFAULT
incident_channels: ["inc-*"]
groups:
  sre: {users: [U0SRE1, U0SRE2], usergroups: [S0ONCALL]}
  dba: {users: [U0DBA1, U0SRE1]}
  security: {users: [U0SEC1]}
environments:
  prod: {namespaces: [payments, checkout, "db-*"]}
  staging: {namespaces: ["staging-*"]}
rules:
  - name: checkout freeze
    match: {action: [restart, scale], environment: prod, namespace: checkout}
    deny: "checkout is frozen until Monday"
  - match: {action: restart, environment: staging}
    approval: auto
  - match: {action: rollback, environment: prod, channel: incident}
    approvers: [sre]
    approval_channel: C0INCIDENT
  - match: {action: [restart, scale, rollback], environment: prod, namespace: "db-*"}
    approvers: [sre, dba]
    min_approvals: 2
  - match: {action: [restart, scale, rollback], environment: prod}
    approvers: [sre]
  - match: {action: rotate, path: "secret/prod/*"}
    approvers: [security]
  - match: {action: access, channel: any}
    approval: auto
"""
DECIDE_POLICY = parse_policy(DECIDE_POLICY_TEXT)
SRE = frozenset({"U0SRE1", "U0SRE2"})


def ctx(action: str, **kwargs: Any) -> RequestContext:
    return RequestContext(action=action, requester="U0DEV1", **kwargs)


@pytest.mark.parametrize(
    ("context", "outcome", "reason", "rule", "approvers", "min_approvals", "channel"),
    [
        pytest.param(
            ctx("restart", environment="prod", namespace="checkout"),
            Outcome.DENY,
            DecisionReason.RULE_DENIES,
            0,
            frozenset(),
            0,
            None,
            id="deny-rule-first-action",
        ),
        pytest.param(
            ctx("scale", environment="prod", namespace="checkout"),
            Outcome.DENY,
            DecisionReason.RULE_DENIES,
            0,
            frozenset(),
            0,
            None,
            id="deny-rule-second-action-of-list",
        ),
        pytest.param(
            ctx("rollback", environment="prod", namespace="checkout"),
            Outcome.APPROVAL,
            DecisionReason.RULE_REQUIRES_APPROVAL,
            4,
            SRE,
            1,
            "C0DEFAULT",
            id="action-not-in-deny-list-falls-through",
        ),
        pytest.param(
            ctx("rollback", environment="prod", namespace="checkout", incident=True),
            Outcome.APPROVAL,
            DecisionReason.RULE_REQUIRES_APPROVAL,
            2,
            SRE,
            1,
            "C0INCIDENT",
            id="incident-channel-rule-own-approval-channel",
        ),
        pytest.param(
            ctx("restart", environment="prod", namespace="checkout", incident=True),
            Outcome.DENY,
            DecisionReason.RULE_DENIES,
            0,
            frozenset(),
            0,
            None,
            id="first-match-wins-over-incident",
        ),
        pytest.param(
            ctx("restart", environment="staging", namespace="staging-web"),
            Outcome.AUTO,
            DecisionReason.RULE_AUTO_APPROVES,
            1,
            frozenset(),
            0,
            None,
            id="auto",
        ),
        pytest.param(
            ctx("restart", environment="staging", namespace="staging-web", incident=True),
            Outcome.AUTO,
            DecisionReason.RULE_AUTO_APPROVES,
            1,
            frozenset(),
            0,
            None,
            id="channel-any-matches-incident-too",
        ),
        pytest.param(
            ctx("scale", environment="staging", namespace="staging-web"),
            Outcome.DENY,
            DecisionReason.NO_RULE_MATCHES,
            None,
            frozenset(),
            0,
            None,
            id="environment-mismatch-no-rule",
        ),
        pytest.param(
            ctx("restart", environment="prod", namespace="db-orders"),
            Outcome.APPROVAL,
            DecisionReason.RULE_REQUIRES_APPROVAL,
            3,
            frozenset({"U0SRE1", "U0SRE2", "U0DBA1"}),
            2,
            "C0DEFAULT",
            id="namespace-glob-two-groups-min-2",
        ),
        pytest.param(
            ctx("restart", environment="prod", namespace="payments"),
            Outcome.APPROVAL,
            DecisionReason.RULE_REQUIRES_APPROVAL,
            4,
            SRE,
            1,
            "C0DEFAULT",
            id="namespace-glob-mismatch-falls-through",
        ),
        pytest.param(
            ctx("restart", environment="prod"),
            Outcome.APPROVAL,
            DecisionReason.RULE_REQUIRES_APPROVAL,
            4,
            SRE,
            1,
            "C0DEFAULT",
            id="no-namespace-never-matches-a-namespace-rule",
        ),
        pytest.param(
            ctx("rotate", path="secret/prod/db"),
            Outcome.APPROVAL,
            DecisionReason.RULE_REQUIRES_APPROVAL,
            5,
            frozenset({"U0SEC1"}),
            1,
            "C0DEFAULT",
            id="path-glob",
        ),
        pytest.param(
            ctx("rotate", path="secret/staging/db"),
            Outcome.DENY,
            DecisionReason.NO_RULE_MATCHES,
            None,
            frozenset(),
            0,
            None,
            id="path-glob-mismatch",
        ),
        pytest.param(
            ctx("rotate"),
            Outcome.DENY,
            DecisionReason.NO_RULE_MATCHES,
            None,
            frozenset(),
            0,
            None,
            id="no-path-never-matches-a-path-rule",
        ),
        pytest.param(
            ctx("access", environment="prod", namespace="payments"),
            Outcome.AUTO,
            DecisionReason.RULE_AUTO_APPROVES,
            6,
            frozenset(),
            0,
            None,
            id="absent-fields-match-anything",
        ),
        pytest.param(
            ctx("restart"),
            Outcome.DENY,
            DecisionReason.NO_RULE_MATCHES,
            None,
            frozenset(),
            0,
            None,
            id="no-environment-never-matches-an-environment-rule",
        ),
        pytest.param(
            ctx("history", environment="prod", namespace="payments"),
            Outcome.DENY,
            DecisionReason.NO_RULE_MATCHES,
            None,
            frozenset(),
            0,
            None,
            id="unknown-action",
        ),
    ],
)
def test_decide(
    context: RequestContext,
    outcome: Outcome,
    reason: DecisionReason,
    rule: int | None,
    approvers: frozenset[str],
    min_approvals: int,
    channel: str | None,
) -> None:
    decision = decide(DECIDE_POLICY, context)
    assert decision.outcome is outcome
    assert decision.reason is reason
    assert decision.rule_index == rule
    assert decision.rule_label == (None if rule is None else DECIDE_POLICY.rule_label(rule))
    assert decision.approvers == approvers
    assert decision.min_approvals == min_approvals
    assert decision.approval_channel == channel


def test_decide_deny_rule_carries_its_message_and_label() -> None:
    decision = decide(DECIDE_POLICY, ctx("restart", environment="prod", namespace="checkout"))
    assert decision.message == "checkout is frozen until Monday"
    line = line_of(DECIDE_POLICY_TEXT, "name: checkout freeze")
    assert decision.rule_label == f"rules[0] 'checkout freeze' (line {line})"


def test_decide_approval_names_groups_in_order() -> None:
    decision = decide(DECIDE_POLICY, ctx("scale", environment="prod", namespace="db-main"))
    assert decision.approver_groups == ("sre", "dba")
    assert decision.message == "needs 2 approval(s) from sre, dba"
    # Slack user groups are not user IDs: only the groups' users are approvers.
    assert "S0ONCALL" not in decision.approvers


def test_decide_auto_message_names_the_rule() -> None:
    decision = decide(DECIDE_POLICY, ctx("restart", environment="staging", namespace="staging-a"))
    assert decision.message == f"approved automatically by {DECIDE_POLICY.rule_label(1)}"
    assert decision.approver_groups == ()


@pytest.mark.parametrize(
    ("context", "words", "absent"),
    [
        (ctx("scale", environment="staging"), ["no policy rule allows scale in staging"], None),
        (ctx("rotate", path="secret/x"), ["no policy rule allows rotate;"], " in "),
    ],
)
def test_decide_no_match_message(context: RequestContext, words: list[str], absent: str) -> None:
    decision = decide(DECIDE_POLICY, context)
    for word in words:
        assert word in decision.message
    if absent is not None:
        assert absent not in decision.message
    assert decision.rule_label is None
    assert decision.approval_channel is None


def test_decide_on_design_example() -> None:
    loaded = parse_policy(DESIGN_POLICY)
    restart_staging = decide(loaded, ctx("restart", environment="staging", namespace="staging-x"))
    assert restart_staging.outcome is Outcome.AUTO
    # Rule 2 (incident rollbacks) is shadowed by rule 1, which matches first.
    rollback = decide(loaded, ctx("rollback", environment="prod", incident=True))
    assert rollback.rule_index == 1
    # So is rule 3: a prod scale matches rule 1 first, and rule 3's limits never apply.
    assert decide(loaded, ctx("scale", environment="prod")).rule_index == 1
    rotate = decide(loaded, ctx("rotate", path="secret/prod/payments/db"))
    assert (rotate.rule_index, rotate.min_approvals) == (5, 2)
    assert rotate.approvers == {"U0SEC1", "U0SEC2"}
    assert decide(loaded, ctx("access", environment="staging")).outcome is Outcome.DENY


def test_decision_is_frozen() -> None:
    decision = decide(DECIDE_POLICY, ctx("rotate", path="secret/prod/db"))
    with pytest.raises(AttributeError):
        decision.min_approvals = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("user", "requester", "expected"),
    [
        ("U0SRE1", "U0DEV1", True),
        ("U0SRE2", "U0SRE1", True),
        ("U0SRE1", "U0SRE1", False),  # the requester never counts, even as an approver
        ("U0DEV1", "U0DEV1", False),
        ("U0SEC1", "U0DEV1", False),  # not an approver of this rule
        ("S0ONCALL", "U0DEV1", False),  # a user group ID is not a user
    ],
)
def test_may_approve(user: str, requester: str, expected: bool) -> None:
    decision = decide(DECIDE_POLICY, ctx("restart", environment="prod", namespace="payments"))
    assert decision.may_approve(user, requester=requester) is expected


def test_nobody_may_approve_an_auto_or_denied_request() -> None:
    for context in (
        ctx("restart", environment="staging", namespace="staging-a"),
        ctx("restart", environment="prod", namespace="checkout"),
        ctx("history"),
    ):
        decision = decide(DECIDE_POLICY, context)
        assert not any(decision.may_approve(u, requester="U0DEV1") for u in SRE | {"U0SEC1"})


# --- the new rule features: validation ---------------------------------------------------------

FEATURE_BASE = """\
version: 1
approval_channel: C0A
groups:
  sre: {users: [U0SRE1, U0SRE2]}
  security: {users: [U0SEC1]}
environments:
  prod: {namespaces: [payments]}
rules:
  - match: {action: restart}
    approvers: [sre]
"""
# The rule under test replaces the last two lines; it starts on line 9.


def with_rule(rule: str, top: str = "") -> str:
    text = FEATURE_BASE.replace("  - match: {action: restart}\n    approvers: [sre]\n", rule)
    return text + top


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        pytest.param(
            with_rule(
                "  - match: {action: rotate}\n"
                "    approvers: [sre]\n"
                "    steps: [{approvers: [security]}]\n"
            ),
            9,
            "rules[0]",
            ["exactly one outcome", "'steps: [...]'"],
            id="steps-and-approvers",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: rotate}\n"
                "    steps: [{approvers: [security]}]\n"
                "    min_approvals: 2\n"
            ),
            11,
            "rules[0].min_approvals",
            ["give min_approvals in each step"],
            id="rule-min-approvals-with-steps",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: rotate}\n"
                "    steps:\n"
                "      - {approvers: [sre]}\n"
                "      - {approvers: [dba]}\n"
            ),
            12,
            "rules[0].steps[1].approvers[0]",
            ["unknown group 'dba'"],
            id="unknown-group-in-step",
        ),
        pytest.param(
            with_rule("  - match: {action: rotate}\n    steps:\n      - {approvers: []}\n"),
            11,
            "rules[0].steps[0].approvers",
            ["at least 1 item"],
            id="empty-step",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: rotate}\n"
                "    steps:\n"
                "      - {approvers: [sre], min_approvals: 0}\n"
            ),
            11,
            "rules[0].steps[0].min_approvals",
            ["greater than or equal to 1"],
            id="step-min-approvals-0",
        ),
        pytest.param(
            with_rule("  - match: {action: restart, requesters: [devs]}\n    approval: auto\n"),
            9,
            "rules[0].match.requesters[0]",
            ["unknown group 'devs'"],
            id="unknown-requesters-group",
        ),
        pytest.param(
            with_rule("  - match: {action: restart, requester_kind: bot}\n    approval: auto\n"),
            9,
            "rules[0].match.requester_kind",
            ["'human', 'agent' or 'any'"],
            id="bad-requester-kind",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: restart}\n    approvers: [sre]\n    escalate_after: 10m\n"
            ),
            9,
            "rules[0]",
            ["both escalate_after and escalate_to"],
            id="escalate-after-without-to",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: restart}\n"
                "    approvers: [sre]\n"
                "    escalate_after: 10m\n"
                "    escalate_to: oncall\n"
            ),
            12,
            "rules[0].escalate_to",
            ["unknown group 'oncall'"],
            id="escalate-to-unknown",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: restart}\n"
                "    approvers: [sre]\n"
                "    escalate_after: 1h\n"
                "    escalate_to: security\n"
            ),
            11,
            "rules[0].escalate_after",
            ["must be shorter than", "pending_ttl (1h)"],
            id="escalate-after-default-ttl",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: restart}\n"
                "    approvers: [sre]\n"
                "    escalate_after: 45m\n"
                "    escalate_to: security\n",
                "defaults: {pending_ttl: 30m}\n",
            ),
            11,
            "rules[0].escalate_after",
            ["pending_ttl (30m)"],
            id="escalate-after-defaults-ttl",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: restart}\n    approvers: [sre]\n    pending_ttl: soon\n"
            ),
            11,
            "rules[0].pending_ttl",
            ["'soon' is not a duration"],
            id="bad-pending-ttl",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: restart}\n"
                "    approvers: [sre]\n"
                "    during_freeze: {approvers: [sre], deny: x}\n"
            ),
            11,
            "rules[0].during_freeze",
            ["exactly one of 'approvers' or 'deny'"],
            id="during-freeze-both",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: restart}\n"
                "    approvers: [sre]\n"
                "    during_freeze: {approvers: [cab]}\n"
            ),
            11,
            "rules[0].during_freeze.approvers[0]",
            ["unknown group 'cab'"],
            id="during-freeze-unknown-group",
        ),
        pytest.param(
            with_rule(
                '  - match: {action: restart}\n    deny: "no"\n    during_freeze: {deny: x}\n'
            ),
            11,
            "rules[0].during_freeze",
            ["a deny rule never uses 'during_freeze'"],
            id="deny-rule-with-during-freeze",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: restart}\n    approvers: [sre]\n    reason_min_length: 5\n"
            ),
            11,
            "rules[0].reason_min_length",
            ["needs 'reason: required'"],
            id="min-length-without-required",
        ),
        pytest.param(
            with_rule("  - match: {action: restart}\n    approvers: [sre]\n    reason: always\n"),
            11,
            "rules[0].reason",
            ["'required' or 'optional'"],
            id="bad-reason",
        ),
        pytest.param(
            with_rule("  - match: {action: [restart, rotate]}\n    approval: auto\n"),
            10,
            "rules[0].approval",
            ["irreversible request kinds (restore, rotate)", "allow_irreversible_auto: true"],
            id="auto-on-irreversible",
        ),
        pytest.param(
            with_rule("  - match: {action: restore}\n    approval: auto\n"),
            10,
            "rules[0].approval",
            ["(restore)"],
            id="auto-on-restore",
        ),
        pytest.param(
            with_rule("  - match: {action: restart}\n    approval: auto\n    break_glass: [sre]\n"),
            11,
            "rules[0].break_glass",
            ["needs no break-glass"],
            id="break-glass-on-auto",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: restart}\n    approvers: [sre]\n    break_glass: [ops]\n"
            ),
            11,
            "rules[0].break_glass[0]",
            ["unknown group 'ops'"],
            id="break-glass-unknown-group",
        ),
        pytest.param(
            with_rule("  - match: {action: restart}\n    approvers: [sre]\n    extend: auto\n"),
            11,
            "rules[0].extend",
            ["applies to access rules only"],
            id="extend-on-restart",
        ),
        pytest.param(
            with_rule("  - match: {action: access}\n    approval: auto\n    extend: approval\n"),
            11,
            "rules[0].extend",
            ["needs a rule with approvers"],
            id="extend-approval-on-auto",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: access}\n"
                "    approvers: [sre]\n"
                "    max_duration: 1h\n"
                "    default_duration: 2h\n"
            ),
            12,
            "rules[0].default_duration",
            ["longer than max_duration"],
            id="default-longer-than-max",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: access}\n"
                "    approvers: [sre]\n"
                "    roles: [view]\n"
                "    vault_groups:\n"
                "      edit: writers\n"
            ),
            13,
            "rules[0].vault_groups.edit",
            ["role 'edit' is not in the rule's roles (view)"],
            id="vault-group-for-unknown-role",
        ),
        pytest.param(
            with_rule("  - match: {action: restart}\n    approvers: [sre]\n    roles: [view]\n"),
            11,
            "rules[0].roles",
            ["applies to access rules only"],
            id="roles-on-restart",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: restart}\n"
                "    approvers: [sre]\n"
                "    limits: {max_replicas: 3}\n"
            ),
            11,
            "rules[0].limits",
            ["applies to scale rules only"],
            id="limits-on-restart",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: scale}\n    approvers: [sre]\n    limits: {max_factor: 1}\n"
            ),
            11,
            "rules[0].limits.max_factor",
            ["greater than 1"],
            id="max-factor-1",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: rotate}\n"
                "    approvers: [sre]\n"
                "    rotate:\n"
                "      password_policy: strong\n"
                "      generator: {length: 32}\n"
            ),
            11,
            "rules[0].rotate",
            ["either password_policy or generator"],
            id="rotate-policy-and-generator",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: rotate}\n"
                "    approvers: [sre]\n"
                "    rotate: {generator: {length: 8}}\n"
            ),
            11,
            "rules[0].rotate.generator.length",
            ["greater than or equal to 16"],
            id="generator-too-short",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: rotate}\n"
                "    approvers: [sre]\n"
                "    rotate: {generator: {charset: abc}}\n"
            ),
            11,
            "rules[0].rotate.generator.charset",
            ["at least 10 distinct characters"],
            id="generator-small-charset",
        ),
        pytest.param(
            with_rule(
                "  - match: {action: restart}\n    approvers: [sre]\n    rotate: {key: password}\n"
            ),
            11,
            "rules[0].rotate",
            ["applies to rotate rules only"],
            id="rotate-on-restart",
        ),
        pytest.param(
            with_rule("  - match: {action: extend}\n    approvers: [sre]\n"),
            9,
            "rules[0].match.action[0]",
            ["unknown action 'extend'", "decided by the access rule"],
            id="extend-is-not-a-rule-action",
        ),
        pytest.param(
            FEATURE_BASE
            + "freezes:\n"
            + "  - start: 2026-12-20 00:00\n"
            + "    end: 2027-01-02 00:00\n"
            + "    timezone: Mars/Olympus\n"
            + "    reason: x\n",
            14,
            "freezes[0].timezone",
            ["unknown time zone 'Mars/Olympus'"],
            id="freeze-bad-zone",
        ),
        pytest.param(
            FEATURE_BASE
            + "freezes:\n"
            + "  - start: 2027-01-02 00:00\n"
            + "    end: 2026-12-20 00:00\n"
            + "    reason: x\n",
            12,
            "freezes[0]",
            ["ends before it starts"],
            id="freeze-reversed",
        ),
        pytest.param(
            FEATURE_BASE
            + "freezes:\n"
            + "  - start: next monday\n"
            + "    end: 2026-12-20 00:00\n"
            + "    reason: x\n",
            12,
            "freezes[0].start",
            ["'next monday' is not a date and time"],
            id="freeze-bad-start",
        ),
        pytest.param(
            FEATURE_BASE
            + "freezes:\n"
            + "  - start: 2026-12-20\n"
            + "    end: 2027-01-02\n"
            + "    reason: x\n"
            + "    allow: [rollback, reboot]\n",
            15,
            "freezes[0].allow[1]",
            ["unknown action 'reboot'"],
            id="freeze-unknown-action",
        ),
        pytest.param(
            FEATURE_BASE
            + "freezes:\n"
            + "  - start: 2026-12-20\n"
            + "    end: 2027-01-02\n"
            + "    reason: x\n"
            + "    environments: [qa]\n",
            15,
            "freezes[0].environments[0]",
            ["unknown environment 'qa'"],
            id="freeze-unknown-environment",
        ),
        pytest.param(
            FEATURE_BASE + "freezes:\n  - start: 2026-12-20\n    end: 2027-01-02\n",
            12,
            "freezes[0].reason",
            ["Field required"],
            id="freeze-without-reason",
        ),
    ],
)
def test_invalid_feature_names_field_and_line(
    text: str, line: int, field: str, words: list[str]
) -> None:
    error = policy_error(text)
    issue = next((i for i in error.issues if i.field == field), None)
    assert issue is not None, [(i.field, i.message) for i in error.issues]
    assert issue.line == line, issue
    for word in words:
        assert word in issue.message


def test_irreversible_auto_allowed_explicitly() -> None:
    loaded = parse_policy(
        with_rule(
            "  - match: {action: rotate, path: secret/dev/*}\n"
            "    approval: auto\n"
            "    allow_irreversible_auto: true\n"
        )
    )
    assert loaded.policy.rules[0].allow_irreversible_auto is True


def test_freeze_accepts_yaml_dates_and_datetimes() -> None:
    loaded = parse_policy(
        FEATURE_BASE
        + "freezes:\n"
        + "  - {start: 2026-12-20, end: '2026-12-21T08:30', reason: a}\n"
        + "  - {start: 2026-12-20 10:00:00, end: 2026-12-20 12:00, reason: b,"
        + " timezone: America/New_York}\n"
    )
    first, second = loaded.policy.freezes
    assert first.window() == (
        datetime(2026, 12, 20, tzinfo=UTC),
        datetime(2026, 12, 21, 8, 30, tzinfo=UTC),
    )
    start, _end = second.window()
    assert start == datetime(2026, 12, 20, 15, 0, tzinfo=UTC)  # 10:00 EST is 15:00 UTC


def test_reversible_table() -> None:
    assert REVERSIBLE == {
        "restart": True,
        "scale": True,
        "rollback": True,
        "access": True,
        "extend": True,
        "rotate": False,
        "restore": False,
        "run": True,  # each runbook declares its own; the loader checks auto rules against it
    }
    assert set(KNOWN_ACTIONS) == set(REVERSIBLE) - {"extend"}
    assert RequestContext("rotate", "U").reversible is False
    assert RequestContext("history", "U").reversible is False  # unknown: treated as irreversible


# --- the new rule features: decisions ----------------------------------------------------------

FEATURES_TEXT = """\
version: 1
approval_channel: C0DEFAULT
incident_channels: ["inc-*"]
defaults: {pending_ttl: 2h}
groups:
  sre: {users: [U0SRE1, U0SRE2], usergroups: [S0ONCALL]}
  security: {users: [U0SEC1, U0SEC2]}
  dev: {users: [U0DEV1, U0DEV2]}
  managers: {users: [U0MGR1]}
environments:
  prod: {namespaces: [payments, checkout]}
  staging: {namespaces: ["staging-*"]}
freezes:
  - name: year-end
    start: "2026-12-20 00:00"
    end: "2027-01-02 00:00"
    timezone: Europe/Berlin
    reason: "year-end freeze"
    allow: [rollback]
    environments: [prod]
rules:
  - name: agents restart staging
    match: {action: restart, environment: staging, requester_kind: agent}
    approval: auto
  - name: devs restart staging
    match: {action: restart, environment: staging, requesters: [dev], requester_kind: human}
    approval: auto
  - name: prod restarts
    match: {action: restart, environment: prod}
    approvers: [sre]
    reason: required
    pending_ttl: 30m
    escalate_after: 10m
    escalate_to: managers
    break_glass: [sre]
    during_freeze: {approvers: [sre, security], min_approvals: 2}
  - name: prod scaling
    match: {action: scale, environment: prod}
    approvers: [sre]
    reason: required
    reason_min_length: 20
    limits: {max_replicas: 10, max_factor: 2}
    during_freeze: {deny: "no scaling during the freeze"}
  - name: prod rollbacks
    match: {action: rollback, environment: prod}
    approvers: [sre]
    approval_channel: C0ROLLBACKS
  - name: prod access
    match: {action: access, environment: prod}
    approvers: [sre]
    roles: [view, edit]
    max_duration: 30m
    vault_groups: {view: opsgate-readers}
    extend: auto
  - name: staging access
    match: {action: access, environment: staging}
    approvers: [dev]
  - name: prod secrets
    match: {action: rotate, path: "secret/prod/*"}
    steps:
      - {approvers: [sre]}
      - {approvers: [security], min_approvals: 2}
    rotate: {password_policy: strong, restart: [deployment/api], namespace: payments}
  - name: dev secrets
    match: {action: rotate, path: "secret/dev/*"}
    approval: auto
    allow_irreversible_auto: true
  - match: {action: restore, path: "secret/staging/*"}
    deny: "restore staging secrets by hand"
  - match: {action: rotate, path: "secret/staging/*"}
    approvers: [security]
  - name: needs three
    match: {action: scale, environment: staging}
    approvers: [security]
    min_approvals: 3
  - match: {action: rollback, environment: staging}
    approvers: [managers]
agents:
  A0BOT: {name: a bot}
"""
FEATURES = parse_policy(FEATURES_TEXT)
OUTSIDE = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
INSIDE = datetime(2026, 12, 24, 12, 0, tzinfo=UTC)
REASON = "the pods leak memory"  # 20 characters


def fctx(action: str, **kwargs: Any) -> RequestContext:
    kwargs.setdefault("requester", "U0DEV1")
    kwargs.setdefault("at", OUTSIDE)
    return RequestContext(action=action, **kwargs)


def rule_named(name: str) -> int:
    return next(i for i, r in enumerate(FEATURES.policy.rules) if r.name == name)


A, D, P, B = Outcome.AUTO, Outcome.DENY, Outcome.APPROVAL, Outcome.BREAK_GLASS
R = DecisionReason
PROD = {"environment": "prod", "namespace": "payments"}
STAGING = {"environment": "staging", "namespace": "staging-web"}


@pytest.mark.parametrize(
    ("context", "outcome", "reason", "rule", "needed", "freeze"),
    [
        # requester kind and requesters
        pytest.param(fctx("restart", requester="A0BOT", requester_kind="agent", **STAGING),
                     A, R.RULE_AUTO_APPROVES, 0, 0, None, id="agent-rule"),
        pytest.param(fctx("restart", **STAGING), A, R.RULE_AUTO_APPROVES, 1, 0, None,
                     id="requesters-member"),
        pytest.param(fctx("restart", requester="U0SEC1", **STAGING),
                     D, R.REQUESTER_NOT_ALLOWED, None, 0, None, id="requesters-non-member"),
        pytest.param(fctx("restart", requester="U0DEV1", requester_kind="agent", **STAGING),
                     A, R.RULE_AUTO_APPROVES, 0, 0, None, id="agent-listed-in-dev-uses-agent-rule"),
        # reason: required
        pytest.param(fctx("restart", **PROD), D, R.REASON_REQUIRED, 2, 0, None,
                     id="reason-missing"),
        pytest.param(fctx("restart", reason="   short    ", **PROD), D, R.REASON_REQUIRED, 2, 0,
                     None, id="reason-too-short-after-strip"),
        pytest.param(fctx("restart", reason="0123456789", **PROD), P, R.RULE_REQUIRES_APPROVAL,
                     2, 1, None, id="reason-default-min-10"),
        pytest.param(fctx("scale", reason="0123456789", **PROD), D, R.REASON_REQUIRED, 3, 0,
                     None, id="reason-min-length-20"),
        pytest.param(fctx("scale", reason=REASON, **PROD), P, R.RULE_REQUIRES_APPROVAL, 3, 1,
                     None, id="reason-long-enough"),
        # freezes
        pytest.param(fctx("restart", reason=REASON, at=INSIDE, **PROD),
                     P, R.FREEZE_REQUIRES_APPROVAL, 2, 2, "year-end", id="freeze-approvers"),
        pytest.param(fctx("scale", reason=REASON, at=INSIDE, **PROD),
                     D, R.FREEZE, 3, 0, "year-end", id="freeze-rule-deny"),
        pytest.param(fctx("rollback", at=INSIDE, **PROD), P, R.RULE_REQUIRES_APPROVAL, 4, 1,
                     None, id="freeze-allows-rollback"),
        pytest.param(fctx("access", at=INSIDE, **PROD), D, R.FREEZE, 5, 0, "year-end",
                     id="freeze-without-during-freeze-denies"),
        pytest.param(fctx("extend", at=INSIDE, **PROD), D, R.FREEZE, 5, 0, "year-end",
                     id="freeze-extend-as-access"),
        pytest.param(fctx("access", at=INSIDE, **STAGING), P, R.RULE_REQUIRES_APPROVAL, 6, 1,
                     None, id="freeze-other-environment"),
        pytest.param(fctx("restart", reason=REASON,
                          at=datetime(2026, 12, 19, 23, 30, tzinfo=UTC), **PROD),
                     P, R.FREEZE_REQUIRES_APPROVAL, 2, 2, "year-end",
                     id="freeze-starts-in-its-time-zone"),
        pytest.param(fctx("restart", reason=REASON,
                          at=datetime(2026, 12, 19, 22, 59, tzinfo=UTC), **PROD),
                     P, R.RULE_REQUIRES_APPROVAL, 2, 1, None, id="before-freeze"),
        pytest.param(fctx("restart", reason=REASON,
                          at=datetime(2027, 1, 1, 23, 0, tzinfo=UTC), **PROD),
                     P, R.RULE_REQUIRES_APPROVAL, 2, 1, None, id="freeze-end-is-exclusive"),
        pytest.param(fctx("rotate", path="secret/dev/x", at=INSIDE), A, R.RULE_AUTO_APPROVES,
                     8, 0, None, id="freeze-only-prod-no-environment"),
        # break-glass
        pytest.param(fctx("restart", requester="U0SRE1", reason=REASON, break_glass=True,
                          **PROD), B, R.BREAK_GLASS, 2, 1, None, id="break-glass"),
        pytest.param(fctx("restart", requester="U0SRE1", reason=REASON, break_glass=True,
                          at=INSIDE, **PROD), B, R.BREAK_GLASS, 2, 2, "year-end",
                     id="break-glass-in-freeze-with-approvers"),
        pytest.param(fctx("restart", reason=REASON, break_glass=True, **PROD),
                     D, R.BREAK_GLASS_NOT_ALLOWED, 2, 0, None, id="break-glass-not-member"),
        pytest.param(fctx("restart", requester="U0SRE1", requester_kind="agent", reason=REASON,
                          break_glass=True, **PROD),
                     D, R.BREAK_GLASS_NOT_ALLOWED, 2, 0, None, id="break-glass-never-agents"),
        pytest.param(fctx("restart", requester="U0SRE1", break_glass=True, **PROD),
                     D, R.REASON_REQUIRED, 2, 0, None, id="break-glass-needs-reason"),
        pytest.param(fctx("rollback", requester="U0SRE1", reason=REASON, break_glass=True,
                          **PROD), D, R.BREAK_GLASS_NOT_ALLOWED, 4, 0, None,
                     id="break-glass-rule-without-it"),
        pytest.param(fctx("scale", requester="U0SRE1", reason=REASON, break_glass=True,
                          at=INSIDE, **PROD), D, R.FREEZE, 3, 0, "year-end",
                     id="freeze-deny-beats-break-glass"),
        pytest.param(fctx("restart", break_glass=True, **STAGING), A, R.RULE_AUTO_APPROVES, 1,
                     0, None, id="break-glass-on-auto-is-auto"),
        # multi-step, restore, extend
        pytest.param(fctx("rotate", path="secret/prod/db"), P, R.RULE_REQUIRES_APPROVAL, 7, 3,
                     None, id="two-steps"),
        pytest.param(fctx("restore", path="secret/prod/db"), P, R.RULE_REQUIRES_APPROVAL, 7, 3,
                     None, id="restore-by-rotate-rule"),
        pytest.param(fctx("restore", path="secret/staging/db"), D, R.RULE_DENIES, 9, 0, None,
                     id="restore-rule-first"),
        pytest.param(fctx("rotate", path="secret/staging/db"), P, R.RULE_REQUIRES_APPROVAL, 10,
                     1, None, id="rotate-skips-restore-rule"),
        pytest.param(fctx("restore", path="secret/dev/db"), A, R.RULE_AUTO_APPROVES, 8, 0, None,
                     id="restore-auto-with-allow-irreversible"),
        pytest.param(fctx("extend", **PROD), A, R.RULE_AUTO_APPROVES, 5, 0, None,
                     id="extend-auto"),
        pytest.param(fctx("extend", **STAGING), P, R.RULE_REQUIRES_APPROVAL, 6, 1, None,
                     id="extend-approval-default"),
        # not enough approvers
        pytest.param(fctx("scale", **STAGING), D, R.NOT_ENOUGH_APPROVERS, 11, 3, None,
                     id="needs-three-of-two"),
        pytest.param(fctx("rollback", requester="U0MGR1", **STAGING),
                     D, R.NOT_ENOUGH_APPROVERS, 12, 1, None, id="only-approver-is-requester"),
        pytest.param(fctx("rollback", **STAGING), P, R.RULE_REQUIRES_APPROVAL, 12, 1, None,
                     id="only-approver-is-someone-else"),
        pytest.param(fctx("rotate", path="secret/prod/db", requester="U0SEC1"),
                     D, R.NOT_ENOUGH_APPROVERS, 7, 3, None, id="requester-leaves-step-short"),
    ],
)  # fmt: skip
def test_decide_features(
    context: RequestContext,
    outcome: Outcome,
    reason: DecisionReason,
    rule: int | None,
    needed: int,
    freeze: str | None,
) -> None:
    decision = decide(FEATURES, context)
    assert (decision.outcome, decision.reason) == (outcome, reason), decision.message
    assert decision.rule_index == rule
    assert decision.min_approvals == needed
    assert decision.freeze == freeze
    assert decision.policy_sha256 == FEATURES.sha256
    assert decision.reversible is is_reversible(context.action)


def test_requesters_message_names_the_groups() -> None:
    decision = decide(FEATURES, fctx("restart", requester="U0SEC1", **STAGING))
    assert decision.message == "only members of dev may ask for restart in staging"


def test_requester_kind_message() -> None:
    text = with_rule("  - match: {action: restart, requester_kind: human}\n    approval: auto\n")
    decision = decide(parse_policy(text), fctx("restart", requester_kind="agent"))
    assert decision.reason is DecisionReason.REQUESTER_NOT_ALLOWED
    assert decision.message == "automation may not ask for restart"


def test_requesters_resolved_through_usergroups() -> None:
    text = with_rule(
        "  - match: {action: restart, requesters: [sre]}\n    approval: auto\n"
    ).replace("sre: {users: [U0SRE1, U0SRE2]}", "sre: {usergroups: [S0ONCALL]}")
    loaded = parse_policy(text)
    context = fctx("restart", requester="U0ONCALL")
    assert decide(loaded, context).reason is DecisionReason.REQUESTER_NOT_ALLOWED
    groups = resolve_groups(loaded.policy, lambda s: frozenset({"U0ONCALL"}))
    assert decide(loaded, context, groups=groups).outcome is Outcome.AUTO


def test_freeze_messages() -> None:
    denied = decide(FEATURES, fctx("access", at=INSIDE, **PROD))
    assert denied.message == (
        "change freeze 'year-end' until 2027-01-02 00:00 Europe/Berlin: year-end freeze"
    )
    ruled = decide(FEATURES, fctx("scale", reason=REASON, at=INSIDE, **PROD))
    assert ruled.message == "no scaling during the freeze"
    asked = decide(FEATURES, fctx("restart", reason=REASON, at=INSIDE, **PROD))
    assert asked.approver_groups == ("sre", "security")
    assert asked.approvers == {"U0SRE1", "U0SRE2", "U0SEC1", "U0SEC2"}
    assert asked.message == "needs 2 approval(s) from sre, security (change freeze: year-end)"


def test_freeze_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match=r"RequestContext\.at is required"):
        decide(FEATURES, fctx("restart", at=None, reason=REASON, **PROD))
    with pytest.raises(ValueError, match="aware"):
        decide(FEATURES, fctx("restart", at=datetime(2026, 12, 24), reason=REASON, **PROD))
    # a policy without freezes needs no time
    assert decide(DECIDE_POLICY, ctx("rotate", path="secret/prod/db")).rule_index == 5


def test_two_steps_are_listed_in_order() -> None:
    decision = decide(FEATURES, fctx("rotate", path="secret/prod/db"))
    assert decision.steps == (
        Step(("sre",), frozenset({"U0SRE1", "U0SRE2"}), 1),
        Step(("security",), frozenset({"U0SEC1", "U0SEC2"}), 2),
    )
    assert decision.approver_groups == ("sre", "security")
    assert decision.message == "needs approvals: 1 from sre and 2 from security"
    assert decision.approval_channel == "C0DEFAULT"


def test_timing_and_escalation() -> None:
    restart = decide(
        FEATURES,
        fctx("restart", reason=REASON, **PROD),
        groups={**static_groups(FEATURES.policy), "managers": frozenset({"U0MGR1", "U0MGR2"})},
    )
    assert (restart.pending_ttl, restart.escalate_after) == (1800, 600)
    assert restart.escalate_to == "managers"
    assert restart.escalate_to_users == {"U0MGR1", "U0MGR2"}
    rollback = decide(FEATURES, fctx("rollback", **PROD))
    assert rollback.pending_ttl == 7200  # defaults.pending_ttl
    assert (rollback.escalate_after, rollback.escalate_to) == (None, None)
    assert rollback.escalate_to_users == frozenset()
    assert rollback.approval_channel == "C0ROLLBACKS"
    assert decide(DECIDE_POLICY, ctx("rotate", path="secret/prod/db")).pending_ttl == 3600


def test_settings_are_json() -> None:
    access = decide(FEATURES, fctx("access", **PROD))
    assert access.settings == {
        "limits": None,
        "roles": ["view", "edit"],
        "max_duration": 1800,
        "default_duration": 1800,  # min(1h, max_duration)
        "vault_groups": {"view": "opsgate-readers"},
        "extend": "auto",
        "rotate": None,
    }
    staging_access = decide(FEATURES, fctx("access", **STAGING))
    assert staging_access.settings["default_duration"] == 3600
    assert staging_access.settings["extend"] == "approval"
    scale = decide(FEATURES, fctx("scale", reason=REASON, **PROD))
    assert scale.settings["limits"] == {
        "min_replicas": None,
        "max_replicas": 10,
        "max_factor": 2.0,
    }
    assert scale.settings["default_duration"] is None
    rotate = decide(FEATURES, fctx("rotate", path="secret/prod/db"))
    assert rotate.settings["rotate"] == {
        "password_policy": "strong",
        "generator": None,
        "key": None,
        "restart": ["deployment/api"],
        "namespace": "payments",
    }
    assert json.loads(json.dumps(rotate.settings)) == rotate.settings


def test_break_glass_decision_names_reviewers() -> None:
    decision = decide(
        FEATURES, fctx("restart", requester="U0SRE1", reason=REASON, break_glass=True, **PROD)
    )
    assert decision.approvers == {"U0SRE1", "U0SRE2"}
    assert decision.may_approve("U0SRE2", requester="U0SRE1")
    assert not decision.may_approve("U0SRE1", requester="U0SRE1")
    assert "sre will review it" in decision.message


def test_not_enough_approvers_counts_usergroups_when_resolved() -> None:
    context = fctx("scale", **STAGING)
    groups = resolve_groups(FEATURES.policy, lambda s: frozenset({"U0ON1", "U0ON2"}))
    assert decide(FEATURES, context, groups=groups).reason is DecisionReason.NOT_ENOUGH_APPROVERS
    groups["security"] = frozenset({"U0SEC1", "U0SEC2", "U0SEC3"})
    decision = decide(FEATURES, context, groups=groups)
    assert decision.outcome is Outcome.APPROVAL
    assert decision.approvers == {"U0SEC1", "U0SEC2", "U0SEC3"}


def test_sre_usergroup_members_approve_when_resolved() -> None:
    groups = resolve_groups(FEATURES.policy, {"S0ONCALL": frozenset({"U0ON1"})}.__getitem__)
    decision = decide(FEATURES, fctx("rollback", **PROD), groups=groups)
    assert decision.approvers == {"U0SRE1", "U0SRE2", "U0ON1"}
    assert decide(FEATURES, fctx("rollback", **PROD)).approvers == {"U0SRE1", "U0SRE2"}


def test_irreversible_auto_refused_defensively() -> None:
    """A policy that skipped validation (built in code) still never auto-approves a rotation."""
    data = yaml.safe_load(with_rule("  - match: {action: rotate}\n    approval: auto\n"))
    loaded = LoadedPolicy(Policy.model_validate(data), "0" * 64, "code", (9,))
    decision = decide(loaded, fctx("rotate", path="secret/x"))
    assert (decision.outcome, decision.reason) == (
        Outcome.DENY,
        DecisionReason.IRREVERSIBLE_AUTO_REFUSED,
    )
    assert "cannot be undone" in decision.message


@pytest.mark.parametrize(
    ("actor_kind", "user", "expected"),
    [("human", "U0SRE2", True), ("agent", "U0SRE2", False), ("human", "U0DEV1", False)],
)
def test_agents_never_approve(actor_kind: str, user: str, expected: bool) -> None:
    decision = decide(FEATURES, fctx("rollback", **PROD))
    assert decision.may_approve(user, requester="U0DEV1", actor_kind=actor_kind) is expected


def test_denied_for_lack_of_approvers_has_no_approvers_to_ask() -> None:
    decision = decide(FEATURES, fctx("scale", **STAGING))
    assert decision.steps  # explain shows what would be needed
    assert not decision.may_approve("U0SEC1", requester="U0DEV1")


# --- count_satisfied ----------------------------------------------------------------------------

S_SRE = Step(("sre",), frozenset({"U1", "U2"}), 1)
S_SEC = Step(("sec",), frozenset({"U2", "U3"}), 1)
S_TWO = Step(("both",), frozenset({"U1", "U2", "U3", "U4"}), 2)


@pytest.mark.parametrize(
    ("steps", "approvals", "satisfied", "per_step"),
    [
        pytest.param([S_SRE], [], False, [[]], id="nobody"),
        pytest.param([S_SRE], ["U1"], True, [["U1"]], id="one"),
        pytest.param([S_SRE], ["U0"], False, [[]], id="requester-ignored"),
        pytest.param([S_SRE], ["U9"], False, [[]], id="stranger-ignored"),
        pytest.param([S_SRE], ["U1", "U2"], True, [["U1"]], id="extra-not-counted"),
        pytest.param([S_TWO], ["U1", "U1"], False, [["U1"]], id="same-person-twice"),
        pytest.param([S_TWO], ["U1", "U3"], True, [["U1", "U3"]], id="two-distinct"),
        pytest.param([S_SRE, S_SEC], ["U2"], False, [["U2"], []], id="one-person-one-step"),
        pytest.param([S_SRE, S_SEC], ["U2", "U1"], True, [["U1"], ["U2"]],
                     id="earlier-approver-moved"),
        pytest.param([S_SEC, S_SRE], ["U2", "U3"], True, [["U3"], ["U2"]],
                     id="moved-the-other-way"),
        pytest.param([S_SRE, S_SEC], ["U1", "U3"], True, [["U1"], ["U3"]], id="two-steps"),
        pytest.param([S_SRE, S_SEC, S_TWO], ["U2", "U1", "U3", "U4"], True, None,
                     id="three-steps-four-people"),
        pytest.param([], ["U1"], True, [], id="no-steps"),
    ],
)  # fmt: skip
def test_count_satisfied(
    steps: list[Step], approvals: list[str], satisfied: bool, per_step: list[list[str]] | None
) -> None:
    ok, got = count_satisfied(steps, approvals, "U0")
    assert ok is satisfied
    if per_step is not None:
        assert got == per_step
    counted = [p for names in got for p in names]
    assert len(counted) == len(set(counted))


def test_count_satisfied_one_person_cannot_fill_two_steps() -> None:
    steps = [S_SRE, Step(("sec",), frozenset({"U2"}), 1), Step(("x",), frozenset({"U1", "U4"}), 2)]
    ok, per_step = count_satisfied(steps, ["U1", "U2", "U4"], "U0")
    assert ok is False  # U1 is needed by two steps
    assert sum(map(len, per_step)) == 3
    ok, per_step = count_satisfied(steps, ["U1", "U2", "U4", "U5"], "U0")
    assert ok is False  # U5 is in no step
    ok, per_step = count_satisfied(
        [
            S_SRE,
            Step(("sec",), frozenset({"U2"}), 1),
            Step(("x",), frozenset({"U1", "U4", "U5"}), 2),
        ],
        ["U1", "U2", "U4", "U5"],
        "U0",
    )
    assert ok is True
    assert per_step == [["U1"], ["U2"], ["U4", "U5"]]


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 59, 60, 5400, 86400 + 61)] == [
        "0s",
        "59s",
        "1m",
        "1h30m",
        "1d1m1s",
    ]
    assert all(parse_duration(format_duration(s)) == s for s in (1, 90, 3600, 7261, 90061))


def test_count_satisfied_ignores_the_requester_and_agents() -> None:
    ok, per_step = count_satisfied([S_TWO], ["U1", "U2", "U3"], "U1", agents={"U2"})
    assert (ok, per_step) == (False, [["U3"]])


# --- warnings (opsgate policy check) -------------------------------------------------------------


def warning_fields(text: str) -> list[tuple[str, str]]:
    return [(w.field, w.message) for w in policy_warnings(parse_policy(text))]


def test_warnings_on_the_design_example() -> None:
    loaded = parse_policy(DESIGN_POLICY)
    warnings = policy_warnings(loaded)
    shadowed = {w.field: w for w in warnings if "can never match" in w.message}
    assert set(shadowed) == {"rules[2]", "rules[3]"}
    assert f"{loaded.rule_label(1)} matches every request it does" in shadowed["rules[2]"].message
    assert shadowed["rules[2]"].line == loaded.rule_lines[2] == 23
    assert len(warnings) == 2


@pytest.mark.parametrize(
    ("earlier", "later", "shadowed"),
    [
        ("{action: restart}", "{action: restart, environment: prod}", True),
        ("{action: [restart, scale]}", "{action: scale, namespace: pay*}", True),
        ("{action: rotate}", "{action: restore}", True),
        ("{action: restore}", "{action: rotate}", False),
        ("{action: restart, environment: prod}", "{action: restart}", False),
        ("{action: restart, namespace: 'pay*'}", "{action: restart, namespace: payments}", True),
        ("{action: restart, namespace: 'pay*'}", "{action: restart, namespace: 'pay*'}", True),
        ("{action: restart, namespace: 'pay*'}", "{action: restart, namespace: 'p*'}", False),
        ("{action: restart, namespace: '*'}", "{action: restart, namespace: 'p?y'}", True),
        ("{action: restart, namespace: 'pay*'}", "{action: restart}", False),
        ("{action: rotate, path: 'secret/*'}", "{action: rotate, path: 'secret/prod/*'}", False),
        ("{action: restart, channel: incident}", "{action: restart}", False),
        ("{action: restart}", "{action: restart, channel: incident}", True),
        ("{action: restart, requester_kind: human}", "{action: restart}", False),
        ("{action: restart}", "{action: restart, requester_kind: agent}", True),
        ("{action: restart, requesters: [sre]}", "{action: restart}", False),
        ("{action: restart, requesters: [sre]}", "{action: restart, requesters: [sre]}", True),
        ("{action: restart, requesters: [sre]}", "{action: restart, requesters: [security]}",
         False),
    ],
)  # fmt: skip
def test_shadow_detection(earlier: str, later: str, shadowed: bool) -> None:
    text = with_rule(
        f"  - match: {earlier}\n    approvers: [sre, security]\n"
        f"  - match: {later}\n    approvers: [sre, security]\n"
    )
    found = [f for f, m in warning_fields(text) if "can never match" in m]
    assert found == (["rules[1]"] if shadowed else [])


@pytest.mark.parametrize(
    ("namespace", "never"),
    [
        ("payments", False),
        ("'pay*'", False),
        ("'p?yments'", False),
        ("checkout", True),
        ("'stag*'", True),
        ("'*-payments'", True),
        ("'[a-z]*'", False),
    ],
)
def test_environment_and_namespace_that_never_meet(namespace: str, never: bool) -> None:
    text = with_rule(
        f"  - match: {{action: restart, environment: prod, namespace: {namespace}}}\n"
        "    approvers: [sre, security]\n"
    )
    found = [f for f, m in warning_fields(text) if f == "rules[0].match.namespace"]
    assert found == (["rules[0].match.namespace"] if never else [])


def test_empty_and_unused_groups() -> None:
    text = FEATURE_BASE.replace(
        "  security: {users: [U0SEC1]}\n",
        "  security: {users: [U0SEC1]}\n  nobody: {users: []}\n  oncall: {usergroups: [S0X]}\n",
    )
    loaded = parse_policy(text)
    warnings = [(w.line, w.field, w.message) for w in policy_warnings(loaded)]
    assert warnings == [
        (5, "groups.security", "is not used by any rule"),
        (6, "groups.nobody", "has nobody in it"),
        (6, "groups.nobody", "is not used by any rule"),
        (7, "groups.oncall", "is not used by any rule"),
    ]


def test_groups_used_anywhere_count_as_used() -> None:
    assert policy_warnings(FEATURES, now=OUTSIDE) == []


def test_ended_freeze_warns() -> None:
    warnings = policy_warnings(FEATURES, now=datetime(2027, 2, 1, tzinfo=UTC))
    assert [(w.field, w.message, w.line) for w in warnings] == [
        ("freezes[0]", "has already ended", line_of(FEATURES_TEXT, "name: year-end"))
    ]


def test_explain_mismatches() -> None:
    why = explain_mismatches(FEATURES, fctx("restart", requester="U0SEC1", **STAGING))
    assert why[0] == ["the requester is not agent"]
    assert why[1] == ["the requester is not in dev"]
    assert why[2] == ["environment staging is not prod"]


# --- properties over random policies -----------------------------------------------------------


def reference_frozen(data: dict[str, Any], context: RequestContext) -> bool:
    """Whether a freeze that does not allow the request is in force, read independently."""
    assert context.at is not None
    action = "access" if context.action == "extend" else context.action
    for freeze in data["freezes"]:
        zone = ZoneInfo(freeze["timezone"])
        start, end = FREEZE_START.replace(tzinfo=zone), FREEZE_END.replace(tzinfo=zone)
        if "environments" in freeze and context.environment not in _listed(freeze["environments"]):
            continue
        if action in freeze.get("allow", []):
            continue
        if start <= context.at < end:
            return True
    return False


def load(data: dict[str, Any]) -> LoadedPolicy:
    return parse_policy(yaml.safe_dump(data, sort_keys=False))


def reference_decision(
    data: dict[str, Any], context: RequestContext
) -> tuple[Outcome, DecisionReason | None]:
    """The outcome and reason read independently from the raw YAML data, in the documented order:
    match → deny → freeze → reason → break-glass → auto or approvers. The reason is None when no
    rule matches (then ``no_rule_matches`` or ``requester_not_allowed``, which the property of
    the first matching rule tells apart)."""
    index = first_match(data, context)
    if index is None:
        return Outcome.DENY, None
    rule = data["rules"][index]
    if "deny" in rule:
        return Outcome.DENY, DecisionReason.RULE_DENIES
    if context.action == "extend":
        auto = (
            rule.get("extend", "auto" if rule.get("approval") == "auto" else "approval") == "auto"
        )
    else:
        auto = rule.get("approval") == "auto"
    if "steps" in rule:
        steps = [(s["approvers"], s["min_approvals"]) for s in rule["steps"]]
    else:
        steps = [(rule.get("approvers", []), rule.get("min_approvals", 1))]
    frozen = reference_frozen(data, context)
    if frozen:
        during = rule.get("during_freeze")
        if during is None or "deny" in during:
            return Outcome.DENY, DecisionReason.FREEZE
        steps, auto = [(during["approvers"], during.get("min_approvals", 1))], False
    needs_reason = rule.get("reason") == "required" or (context.break_glass and not auto)
    if needs_reason and len((context.reason or "").strip()) < rule.get("reason_min_length", 10):
        return Outcome.DENY, DecisionReason.REASON_REQUIRED
    if context.break_glass and not auto:
        allowed = {u for g in rule.get("break_glass", []) for u in GROUPS[g]}
        if context.requester_kind == "agent" or context.requester not in allowed:
            return Outcome.DENY, DecisionReason.BREAK_GLASS_NOT_ALLOWED
        return Outcome.BREAK_GLASS, DecisionReason.BREAK_GLASS
    if auto:
        if not is_reversible(context.action) and not rule.get("allow_irreversible_auto"):
            return Outcome.DENY, DecisionReason.IRREVERSIBLE_AUTO_REFUSED
        return Outcome.AUTO, DecisionReason.RULE_AUTO_APPROVES
    resolved = [
        Step(tuple(groups), frozenset(u for g in groups for u in GROUPS[g]), needed)
        for groups, needed in steps
    ]
    others = sorted({u for step in resolved for u in step.approvers} - {context.requester})
    if not brute_force_satisfiable(resolved, others):
        return Outcome.DENY, DecisionReason.NOT_ENOUGH_APPROVERS
    if frozen:
        return Outcome.APPROVAL, DecisionReason.FREEZE_REQUIRES_APPROVAL
    return Outcome.APPROVAL, DecisionReason.RULE_REQUIRES_APPROVAL


@PROPERTY_SETTINGS
@given(cases())
def test_property_never_auto_unless_a_rule_auto_approves(
    case: tuple[dict[str, Any], RequestContext],
) -> None:
    data, context = case
    decision = decide(load(data), context)
    outcome, reason = reference_decision(data, context)
    assert decision.outcome is outcome, decision.message
    if reason is None:
        assert decision.reason in (
            DecisionReason.NO_RULE_MATCHES,
            DecisionReason.REQUESTER_NOT_ALLOWED,
        )
    else:
        assert decision.reason is reason, decision.message
    if decision.outcome is not Outcome.AUTO:
        # nothing happens without people: a denial asks nobody and nobody may approve it; an
        # approval or a break-glass names people other than the requester to approve or review
        if decision.outcome is Outcome.DENY:
            assert not any(decision.may_approve(u, requester=context.requester) for u in USERS)
        else:
            assert decision.steps
            assert decision.approvers - {context.requester}
        return
    index = first_match(data, context)
    assert index is not None, "AUTO without a matching rule"
    assert decision.rule_index == index
    rule = data["rules"][index]
    if context.action == "extend":
        assert rule.get("extend") == "auto" or (
            rule.get("approval") == "auto" and "extend" not in rule
        )
    else:
        assert rule.get("approval") == "auto", "AUTO from a rule that does not auto-approve"
    assert not reference_frozen(data, context), "AUTO during a freeze"
    if rule.get("reason") == "required":
        assert len((context.reason or "").strip()) >= rule.get("reason_min_length", 10)
    if not is_reversible(context.action):
        assert rule.get("allow_irreversible_auto") is True
    assert decision.approvers == frozenset()


@PROPERTY_SETTINGS
@given(cases())
def test_property_decision_follows_the_first_matching_rule(
    case: tuple[dict[str, Any], RequestContext],
) -> None:
    data, context = case
    loaded = load(data)
    decision = decide(loaded, context)
    index = first_match(data, context)
    assert decision.rule_index == index
    assert decision.policy_sha256 == loaded.sha256
    if index is None:
        assert decision.outcome is Outcome.DENY
        assert decision.reason in (
            DecisionReason.NO_RULE_MATCHES,
            DecisionReason.REQUESTER_NOT_ALLOWED,
        )
        assert decision.steps == ()
        return
    rule = data["rules"][index]
    assert decision.rule_label == loaded.rule_label(index)
    if "deny" in rule:
        assert (decision.outcome, decision.reason) == (Outcome.DENY, DecisionReason.RULE_DENIES)
        assert decision.message == rule["deny"]
    if decision.outcome is Outcome.BREAK_GLASS:
        assert context.break_glass
        assert context.requester_kind == "human"
        assert any(context.requester in GROUPS[g] for g in rule.get("break_glass", []))
    if decision.outcome is Outcome.APPROVAL:
        assert not context.break_glass or rule.get("approval") == "auto" == False
        frozen = reference_frozen(data, context)
        if frozen:
            groups = rule["during_freeze"]["approvers"]
            assert decision.approver_groups == tuple(groups)
            assert decision.reason is DecisionReason.FREEZE_REQUIRES_APPROVAL
        elif "steps" in rule:
            assert [s.groups for s in decision.steps] == [
                tuple(s["approvers"]) for s in rule["steps"]
            ]
            assert [s.min_approvals for s in decision.steps] == [
                s["min_approvals"] for s in rule["steps"]
            ]
        else:
            assert decision.approver_groups == tuple(rule["approvers"])
            assert decision.min_approvals == rule.get("min_approvals", 1)
            assert decision.approval_channel == rule.get("approval_channel", "C0DEFAULT")
        for step in decision.steps:
            assert step.approvers == {u for g in step.groups for u in GROUPS[g]}
        # the request can be approved by people other than the requester
        others = sorted(decision.approvers - {context.requester})
        assert count_satisfied(decision.steps, others, context.requester)[0]


def brute_force_satisfiable(steps: list[Step], people: list[str]) -> bool:
    slots = [k for k, step in enumerate(steps) for _ in range(step.min_approvals)]
    if len(slots) > len(people):
        return False
    for chosen in itertools.permutations(people, len(slots)):
        if all(person in steps[k].approvers for person, k in zip(chosen, slots, strict=True)):
            return True
    return False


@PROPERTY_SETTINGS
@given(
    cases(),
    st.lists(st.sampled_from(USERS), max_size=7),
    st.sets(st.sampled_from(USERS), max_size=2),
)
def test_property_requester_and_agent_clicks_never_count(
    case: tuple[dict[str, Any], RequestContext],
    clicks: list[str],
    agents: set[str],
) -> None:
    data, context = case
    decision = decide(load(data), context)
    requester = context.requester
    for user in USERS:
        assert decision.may_approve(user, requester=user) is False
        assert decision.may_approve(user, requester=requester, actor_kind="agent") is False
    ok, per_step = count_satisfied(decision.steps, clicks, requester, agents=agents)
    counted = [p for names in per_step for p in names]
    assert requester not in counted
    assert not agents & set(counted)
    assert len(counted) == len(set(counted))
    for step, names in zip(decision.steps, per_step, strict=True):
        assert set(names) <= step.approvers
        assert len(names) <= step.min_approvals
    # the requester's and the agents' clicks change nothing
    honest = [c for c in clicks if c != requester and c not in agents]
    assert count_satisfied(decision.steps, honest, requester) == (ok, per_step)
    # and the matching is maximal: satisfied exactly when some assignment exists
    people = list(dict.fromkeys(honest))
    assert ok == brute_force_satisfiable(list(decision.steps), people)


def test_the_docs_complete_example_validates_without_warnings() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "policy.md").read_text()
    example = docs.split("## A complete example", 1)[1].split("```yaml\n", 1)[1].split("```")[0]
    loaded = parse_policy(example, source="docs/policy.md")
    assert len(loaded.policy.rules) == 6
    assert policy_warnings(loaded) == []
    berlin_noon = datetime(2026, 12, 24, 11, 0, tzinfo=UTC)
    restart = decide(
        loaded,
        RequestContext(
            "restart", "U0DEV1", "prod", "payments", reason="memory leak", at=berlin_noon
        ),
    )
    assert restart.reason is DecisionReason.FREEZE_REQUIRES_APPROVAL
    assert restart.approver_groups == ("sre", "managers")
