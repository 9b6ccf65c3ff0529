"""Unit tests of ``approvals.policy``: the file format, its validation errors, and the decision.

Parametrized tables for the rules of the format and for every feature of a rule, plus hypothesis
properties of :func:`decide` over random policies and requests.
"""

from __future__ import annotations

import fnmatch
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals.policy import (
    Decision,
    DecisionReason,
    LoadedPolicy,
    NamespaceError,
    Outcome,
    PolicyError,
    RequestContext,
    decide,
    is_incident_channel,
    load_policy,
    parse_duration,
    parse_policy,
    resolve_environment,
)

# The example of design.md ('Policy'), verbatim.
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


# --- properties over random policies -----------------------------------------------------------

ACTIONS = ["restart", "scale", "rollback"]
ENVS = ["prod", "staging"]
GROUPS = {"sre": ["U1", "U2"], "sec": ["U3"], "both": ["U2", "U3", "U4"]}
USERS = ["U1", "U2", "U3", "U4", "U5"]
NAMESPACE_GLOBS = ["payments", "pay*", "staging-*", "*"]
NAMESPACES = ["payments", "payroll", "staging-web", "other"]
PATH_GLOBS = ["secret/prod/*", "secret/*"]
PATHS = ["secret/prod/db", "secret/staging/db", "kv/x"]


def one_or_list(values: list[str]) -> st.SearchStrategy[str | list[str]]:
    return st.one_of(
        st.sampled_from(values),
        st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True),
    )


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    match: dict[str, Any] = {"action": draw(one_or_list(ACTIONS))}
    if draw(st.booleans()):
        match["environment"] = draw(one_or_list(ENVS))
    if draw(st.booleans()):
        match["namespace"] = draw(one_or_list(NAMESPACE_GLOBS))
    if draw(st.booleans()):
        match["path"] = draw(one_or_list(PATH_GLOBS))
    channel = draw(st.sampled_from([None, "any", "incident"]))
    if channel is not None:
        match["channel"] = channel
    rule: dict[str, Any] = {"match": match}
    kind = draw(st.sampled_from(["auto", "approvers", "deny"]))
    if kind == "auto":
        rule["approval"] = "auto"
    elif kind == "deny":
        rule["deny"] = draw(st.sampled_from(["frozen", "not here"]))
    else:
        rule["approvers"] = draw(st.lists(st.sampled_from(sorted(GROUPS)), min_size=1, max_size=2))
        if draw(st.booleans()):
            rule["min_approvals"] = draw(st.integers(1, 3))
        if draw(st.booleans()):
            rule["approval_channel"] = "C0RULE"
    return rule


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "version": 1,
        "approval_channel": "C0DEFAULT",
        "groups": {name: {"users": users} for name, users in GROUPS.items()},
        "environments": {"prod": {"namespaces": ["pay*"]}, "staging": {"namespaces": ["st*"]}},
        "rules": draw(st.lists(rules(), max_size=6)),
    }


@st.composite
def contexts(draw: st.DrawFn) -> RequestContext:
    return RequestContext(
        action=draw(st.sampled_from([*ACTIONS, "access"])),
        requester=draw(st.sampled_from(USERS)),
        environment=draw(st.sampled_from([None, *ENVS])),
        namespace=draw(st.sampled_from([None, *NAMESPACES])),
        path=draw(st.sampled_from([None, *PATHS])),
        incident=draw(st.booleans()),
    )


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def reference_matches(rule: dict[str, Any], context: RequestContext) -> bool:
    """An independent reading of the matching rules, straight from the raw YAML data."""
    match = rule["match"]
    checks = [context.action in _listed(match["action"])]
    if "environment" in match:
        checks.append(context.environment in _listed(match["environment"]))
    for field, value in (("namespace", context.namespace), ("path", context.path)):
        if field in match:
            checks.append(
                value is not None
                and any(fnmatch.fnmatchcase(value, glob) for glob in _listed(match[field]))
            )
    if match.get("channel") == "incident":
        checks.append(context.incident)
    return all(checks)


def first_match(data: dict[str, Any], context: RequestContext) -> int | None:
    return next((i for i, r in enumerate(data["rules"]) if reference_matches(r, context)), None)


def load(data: dict[str, Any]) -> LoadedPolicy:
    return parse_policy(yaml.safe_dump(data, sort_keys=False))


PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(policies(), contexts())
def test_property_auto_only_when_first_matching_rule_is_auto(
    data: dict[str, Any], context: RequestContext
) -> None:
    decision = decide(load(data), context)
    if decision.outcome is Outcome.AUTO:
        auto_rules = [
            i
            for i, rule in enumerate(data["rules"])
            if rule.get("approval") == "auto" and reference_matches(rule, context)
        ]
        assert auto_rules, "AUTO without a matching auto rule"
        assert not any(reference_matches(r, context) for r in data["rules"][: auto_rules[0]])


@PROPERTY_SETTINGS
@given(policies(), contexts())
def test_property_decision_is_that_of_the_first_matching_rule(
    data: dict[str, Any], context: RequestContext
) -> None:
    loaded = load(data)
    decision = decide(loaded, context)
    index = first_match(data, context)
    assert decision.rule_index == index
    if index is None:
        assert (decision.outcome, decision.reason) == (Outcome.DENY, DecisionReason.NO_RULE_MATCHES)
        assert decision.approvers == frozenset()
        return
    rule = data["rules"][index]
    assert decision.rule_label == loaded.rule_label(index)
    if "deny" in rule:
        assert (decision.outcome, decision.reason) == (Outcome.DENY, DecisionReason.RULE_DENIES)
        assert decision.message == rule["deny"]
        assert decision.approvers == frozenset()
    elif rule.get("approval") == "auto":
        assert (decision.outcome, decision.reason) == (
            Outcome.AUTO,
            DecisionReason.RULE_AUTO_APPROVES,
        )
        assert decision.min_approvals == 0
    else:
        assert (decision.outcome, decision.reason) == (
            Outcome.APPROVAL,
            DecisionReason.RULE_REQUIRES_APPROVAL,
        )
        assert decision.approver_groups == tuple(rule["approvers"])
        assert decision.approvers == {u for g in rule["approvers"] for u in GROUPS[g]}
        assert decision.min_approvals == rule.get("min_approvals", 1)
        assert decision.approval_channel == rule.get("approval_channel", "C0DEFAULT")


@PROPERTY_SETTINGS
@given(policies(), contexts(), st.sampled_from(USERS))
def test_property_requester_never_approves_own_request(
    data: dict[str, Any], context: RequestContext, other: str
) -> None:
    decision: Decision = decide(load(data), context)
    requester = context.requester
    assert decision.may_approve(requester, requester=requester) is False
    if other != requester:
        assert decision.may_approve(other, requester=requester) == (other in decision.approvers)
