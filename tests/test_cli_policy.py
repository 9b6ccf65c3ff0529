"""``opsgate policy check`` (errors, warnings, ``--strict``) and ``opsgate policy explain``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine

from approvals.policy import load_policy
from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent

POLICY = """\
version: 1
approval_channel: C0APPROVALS
incident_channels: ["inc-*"]
groups:
  sre: {users: [U0SRE1, U0SRE2], usergroups: [S0ONCALL]}
  security: {users: [U0SEC1, U0SEC2]}
  empty: {users: []}
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
rules:
  - match: {action: restart, environment: staging}
    approval: auto
  - name: prod changes
    match: {action: [restart, scale, rollback], environment: prod}
    approvers: [sre]
    reason: required
    break_glass: [sre]
    pending_ttl: 2h
    escalate_after: 30m
    escalate_to: security
  - name: incident rollbacks
    match: {action: rollback, environment: prod, channel: incident}
    approvers: [sre]
  - match: {action: rotate, path: "secret/prod/*"}
    steps:
      - {approvers: [sre]}
      - {approvers: [security]}
"""


@pytest.fixture(autouse=True)
def before_the_freezes() -> Iterator[None]:
    """``policy check`` warns about freezes that have ended: fix "now" before them."""
    with time_machine.travel(datetime(2026, 11, 21, 12, 0, tzinfo=UTC), tick=True):
        yield


@pytest.fixture
def policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    monkeypatch.setenv("OPSGATE_POLICY", str(path))
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def line_of(needle: str) -> int:
    hits = [i + 1 for i, line in enumerate(POLICY.splitlines()) if needle in line]
    assert len(hits) == 1
    return hits[0]


# --- check ----------------------------------------------------------------------------------------


def test_check_prints_ok_and_warnings(
    capsys: pytest.CaptureFixture[str], policy_file: Path
) -> None:
    code, out, _err = run(capsys, "policy", "check")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"{policy_file}: OK (4 rules, sha256 ")
    assert lines[1:] == [
        f"warning: {policy_file}:{line_of('name: incident rollbacks')}: rules[2]: can never "
        f"match: rules[1] 'prod changes' (line {line_of('name: prod changes')}) matches every "
        "request it does, and comes first",
        f"warning: {policy_file}:{line_of('empty:')}: groups.empty: has nobody in it",
        f"warning: {policy_file}:{line_of('empty:')}: groups.empty: is not used by any rule",
    ]


def test_check_strict_exits_2_on_warnings(
    capsys: pytest.CaptureFixture[str], policy_file: Path
) -> None:
    code, out, _err = run(capsys, "policy", "check", "--strict", str(policy_file))
    assert code == 2
    assert "warning:" in out


def test_check_strict_without_warnings_exits_0(
    capsys: pytest.CaptureFixture[str], policy_file: Path, tmp_path: Path
) -> None:
    clean = tmp_path / "clean.yml"
    clean.write_text(
        POLICY.replace("  empty: {users: []}\n", "").replace(
            "channel: incident}", "channel: incident, namespace: checkout}"
        )
    )
    # still shadowed: prod changes matches every prod rollback, whatever the namespace
    code, out, _ = run(capsys, "policy", "check", "--strict", str(clean))
    assert code == 2
    clean.write_text(
        POLICY.replace("  empty: {users: []}\n", "").replace(
            "    match: {action: rollback, environment: prod, channel: incident}\n",
            "    match: {action: rollback, environment: staging, channel: incident}\n",
        )
    )
    code, out, _ = run(capsys, "policy", "check", "--strict", str(clean))
    assert (code, out.count("\n")) == (0, 1), out


def test_check_errors_exit_1_with_lines(
    capsys: pytest.CaptureFixture[str], policy_file: Path
) -> None:
    policy_file.write_text(
        POLICY.replace("      - {approvers: [security]}", "      - {approvers: [sec]}")
    )
    code, out, err = run(capsys, "policy", "check")
    assert code == 1
    assert out == ""
    assert (
        f"{policy_file}:{line_of('- {approvers: [security]}')}: rules[3].steps[1].approvers[0]: "
        "unknown group 'sec'"
    ) in err


def test_the_shipped_policy_checks_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "policy", "check", "--strict", str(ROOT / "policy.yml"))
    assert code == 0, out
    assert len(load_policy(ROOT / "policy.yml").policy.freezes) == 1


def test_check_as_a_process(policy_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "policy", "check", "--strict", str(policy_file)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "can never match" in result.stdout


# --- explain --------------------------------------------------------------------------------------


def test_explain_approval(capsys: pytest.CaptureFixture[str], policy_file: Path) -> None:
    code, out, _ = run(
        capsys,
        "policy",
        "explain",
        "--user",
        "U0SRE1",
        "--action",
        "restart",
        "--namespace",
        "payments",
        "--reason",
        "memory leak in the api",
        "--at",
        "2026-11-21T12:00:00",
    )
    assert code == 0
    assert "decision: approval (rule_requires_approval)" in out
    assert f"rule:     rules[1] 'prod changes' (line {line_of('name: prod changes')})" in out
    assert "why:      needs 1 approval(s) from sre" in out
    assert (
        "  step 1: 1 of sre: U0SRE1 (the requester), U0SRE2, members of usergroup S0ONCALL "
        "(resolved at run time)"
    ) in out
    assert "pending:  expires after 2h; escalates to security after 30m" in out
    assert f"  rules[0] (line {line_of('action: restart, environment: staging')}): " in out
    assert "environment prod is not staging" in out
    assert "by U0SRE1 (human)" in out
    assert "at 2026-11-21T12:00:00+00:00" in out


def test_explain_freeze_and_break_glass(
    capsys: pytest.CaptureFixture[str], policy_file: Path
) -> None:
    args = ["policy", "explain", "--user", "U0SRE1", "--action", "scale", "-n", "payments"]
    code, out, _ = run(capsys, *args, "--reason", "traffic spike", "--at", "2026-12-24T10:00Z")
    assert code == 0
    assert "decision: deny (freeze)" in out
    assert "change freeze 'year-end' until 2027-01-02 00:00 Europe/Berlin" in out
    assert "(in force)" in out
    code, out, _ = run(
        capsys, *args, "--reason", "traffic spike", "--break-glass", "--at", "2026-11-01T00:00Z"
    )
    assert "decision: break_glass (break_glass)" in out
    assert "reviewers (break-glass):" in out
    code, out, _ = run(capsys, *args, "--agent", "--break-glass", "--reason", "traffic spike")
    assert "decision: deny (break_glass_not_allowed)" in out
    assert "automation can never break the glass" in out


def test_explain_no_rule_lists_every_rule(
    capsys: pytest.CaptureFixture[str], policy_file: Path
) -> None:
    code, out, _ = run(
        capsys, "policy", "explain", "--user", "U0DEV1", "--action", "access", "-n", "checkout"
    )
    assert code == 0
    assert "decision: deny (no_rule_matches)" in out
    assert "rule:     none" in out
    assert out.count("action 'access' is not") == 4


def test_explain_incident_channel_and_steps(
    capsys: pytest.CaptureFixture[str], policy_file: Path
) -> None:
    code, out, _ = run(
        capsys,
        "policy",
        "explain",
        "--user",
        "U0DEV1",
        "--action",
        "restore",
        "--path",
        "secret/prod/db",
        "--channel",
        "inc-42",
    )
    assert code == 0
    assert "in an incident channel" in out
    assert "why:      needs approvals: 1 from sre and 1 from security" in out
    assert "  step 2: 1 of security: U0SEC1, U0SEC2" in out


def test_explain_usergroup_only_group_is_not_refused_silently(
    capsys: pytest.CaptureFixture[str], policy_file: Path
) -> None:
    policy_file.write_text(POLICY.replace("users: [U0SRE1, U0SRE2], usergroups", "usergroups"))
    code, out, _ = run(
        capsys,
        "policy",
        "explain",
        "--user",
        "U0DEV1",
        "--action",
        "rollback",
        "-n",
        "payments",
        "--reason",
        "bad deploy at noon",
    )
    assert code == 0
    assert "decision: deny (not_enough_approvers)" in out
    assert "members of usergroup S0ONCALL (resolved at run time)" in out
    assert "the user groups may supply enough approvers at run time" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "nowhere"], "namespace 'nowhere' is in no environment"),
        (["--env", "qa"], "unknown environment 'qa'"),
        (["-n", "payments", "--at", "yesterday"], "Invalid isoformat string"),
    ],
)
def test_explain_bad_input_exits_1(
    capsys: pytest.CaptureFixture[str], policy_file: Path, args: list[str], message: str
) -> None:
    code, out, err = run(
        capsys, "policy", "explain", "--user", "U0DEV1", "--action", "restart", *args
    )
    assert (code, out) == (1, "")
    assert message in err
