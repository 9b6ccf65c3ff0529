"""Unit tests of ``bot.grammar``: the ``/ops`` command grammar (README.md, 'Commands')."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actions.access import AccessParams
from actions.registry import KINDS
from actions.restart import RestartParams
from actions.restore import RestoreParams
from actions.rollback import RollbackParams
from actions.rotate import RotateParams
from actions.scale import ScaleParams
from actions.workloads import WorkloadKind
from approvals.extend import ExtendParams
from bot.grammar import SUBCOMMANDS, Command, CommandError, help_text, parse, usage
from bot.mrkdwn import escape

RESTART_USAGE = (
    "/ops restart <workload> -n <namespace> [--env ENV] [--reason TEXT] [--break-glass REASON]"
)
STATUS_USAGE = "/ops status [REQUEST_ID | --page N]"


def test_status_without_an_id_asks_for_the_latest_requests() -> None:
    assert parse("status") == Command("status", request_id=None)
    assert parse("status 12") == Command("status", request_id=12)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("restart x -n ns --reason don\u2019t-restart-twice", "don\u2019t-restart-twice"),
        ("restart x -n ns --reason \u201cit\u2019s leaking\u201d", "it's leaking"),
        ("restart x -n ns --reason \u2018OOM\u2019", "OOM"),
    ],
)
def test_a_typographic_apostrophe_is_a_letter_when_it_is_not_a_quote(
    text: str, reason: str
) -> None:
    assert parse(text).reason == reason


@pytest.mark.parametrize("text", ["help", "", "   ", "  help  "])
def test_help(text: str) -> None:
    assert parse(text) == Command("help")


def test_help_about_one_command_names_it() -> None:
    assert parse("help restart") == Command("help", topic="restart")


@pytest.mark.parametrize(
    ("text", "kind", "name", "namespace", "env", "reason"),
    [
        ("restart x -n ns", None, "x", "ns", None, None),
        ("restart x --namespace ns", None, "x", "ns", None, None),
        ("restart -n ns x", None, "x", "ns", None, None),
        (
            'restart deploy/x -n ns --reason "two words"',
            WorkloadKind.DEPLOYMENT,
            "x",
            "ns",
            None,
            "two words",
        ),
        (
            "restart deployment/payments-api -n payments --reason 'memory leak'",
            WorkloadKind.DEPLOYMENT,
            "payments-api",
            "payments",
            None,
            "memory leak",
        ),
        # Slack sends typographic quotes when the client "smartens" them.
        (
            "restart x -n ns --reason \u201cmemory leak\u201d",
            None,
            "x",
            "ns",
            None,
            "memory leak",
        ),
        ("restart x -n ns --reason \u2018two words\u2019", None, "x", "ns", None, "two words"),
        (
            "restart x -n ns --reason \u201cit\u2019s leaking\u201d",
            None,
            "x",
            "ns",
            None,
            "it's leaking",
        ),
        ("restart x -n shared --env staging", None, "x", "shared", "staging", None),
        ("restart x --env=prod --namespace=ns", None, "x", "ns", "prod", None),
        ("restart statefulset/x -n ns", WorkloadKind.STATEFULSET, "x", "ns", None, None),
        ("restart sts/x -n ns", WorkloadKind.STATEFULSET, "x", "ns", None, None),
        ("restart StatefulSet/x -n ns", WorkloadKind.STATEFULSET, "x", "ns", None, None),
        ("restart ds/x -n ns", WorkloadKind.DAEMONSET, "x", "ns", None, None),
        ("restart daemonset/x -n ns", WorkloadKind.DAEMONSET, "x", "ns", None, None),
        ("restart deployments/x -n ns", WorkloadKind.DEPLOYMENT, "x", "ns", None, None),
    ],
)
def test_parse_restart(
    text: str,
    kind: WorkloadKind | None,
    name: str,
    namespace: str,
    env: str | None,
    reason: str | None,
) -> None:
    command = parse(text)
    assert command == Command(
        "restart",
        params=RestartParams(name=name, kind=kind, namespace=namespace),
        namespace=namespace,
        env=env,
        reason=reason,
    )


def test_parse_status() -> None:
    assert parse("status 42") == Command("status", request_id=42)


@pytest.mark.parametrize(
    ("text", "words", "line"),
    [
        pytest.param("frobnicate x", ["Unknown command `frobnicate`"], "all", id="unknown"),
        pytest.param("Restart x -n ns", ["Unknown command `Restart`"], "all", id="case"),
        pytest.param("restart x", ["-n/--namespace"], RESTART_USAGE, id="missing-namespace"),
        pytest.param("restart x -n", ["-n/--namespace", "expected one argument"], RESTART_USAGE),
        pytest.param("restart -n ns", ["workload"], RESTART_USAGE, id="missing-workload"),
        pytest.param("restart", ["workload", "-n/--namespace"], RESTART_USAGE, id="bare"),
        pytest.param(
            "restart pod/x -n ns",
            ["'pod' is not a workload kind", "deployment, statefulset or daemonset"],
            RESTART_USAGE,
            id="unknown-kind",
        ),
        pytest.param(
            "restart deploy/ -n ns", ["'deploy/' is not a workload"], RESTART_USAGE, id="no-name"
        ),
        pytest.param(
            "restart a/b/c -n ns", ["'a/b/c' is not a workload"], RESTART_USAGE, id="two-slashes"
        ),
        pytest.param(
            'restart x -n ns --reason "memory leak',
            ["Cannot read the command", "No closing quotation"],
            "all",
            id="unterminated-quote",
        ),
        pytest.param(
            "restart x -n ns --reason \u201cmemory leak",
            ["No closing quotation"],
            "all",
            id="unterminated-typographic-quote",
        ),
        pytest.param(
            "restart x y -n ns",
            ["unrecognized arguments: y"],
            RESTART_USAGE,
            id="extra-positional",
        ),
        pytest.param(
            "restart x -n ns --reason memory leak",
            ["unrecognized arguments: leak"],
            RESTART_USAGE,
            id="unquoted-reason",
        ),
        pytest.param(
            "restart x -n ns --force",
            ["unrecognized arguments: --force"],
            RESTART_USAGE,
            id="unknown-option",
        ),
        pytest.param(
            "restart x -n ''",
            ["namespace", "at least 1 character"],
            RESTART_USAGE,
            id="empty-namespace",
        ),
        pytest.param(
            f"restart {'a' * 254} -n ns",
            ["name", "at most 253 characters"],
            RESTART_USAGE,
            id="name-too-long",
        ),
        pytest.param(
            "status abc",
            ["request_id", "'abc' is not a request ID"],
            STATUS_USAGE,
            id="status-not-a-number",
        ),
        pytest.param("status 1 2", ["unrecognized arguments: 2"], STATUS_USAGE, id="status-extra"),
        pytest.param(
            "status 12 --page 2",
            ["--page pages through your latest requests; leave out the request ID"],
            STATUS_USAGE,
            id="status-id-and-page",
        ),
        pytest.param(
            "grants --page 0",
            ["--page", "pages are numbered from 1 to 100,000"],
            "/ops grants [--page N]",
            id="grants-page-zero",
        ),
        pytest.param(
            "grants --page 99999999999999999999",
            ["pages are numbered from 1 to 100,000"],
            "/ops grants [--page N]",
            id="grants-page-huge",
        ),
        pytest.param(
            "grants --page two",
            ["'two' is not a page number"],
            "/ops grants [--page N]",
            id="grants-page-not-a-number",
        ),
        pytest.param(
            "status --page",
            ["--page", "expected one argument"],
            STATUS_USAGE,
            id="status-page-missing",
        ),
    ],
)
def test_parse_errors_say_what_and_show_usage(text: str, words: list[str], line: str) -> None:
    with pytest.raises(CommandError) as info:
        parse(text)
    message = str(info.value)
    for word in words:
        assert word in message
    if line == "all":
        assert message.endswith(usage())
        assert f"`{RESTART_USAGE}`" in message
    else:
        assert message.endswith(f"Usage: `{line}`")
    # The usage line comes after what was wrong, on its own line.
    assert "\nUsage:" in message


def test_command_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="Unknown command"):
        parse("nope")


def test_usage_of_one_subcommand() -> None:
    assert usage("restart") == f"Usage: `{RESTART_USAGE}`"
    assert usage("status") == f"Usage: `{STATUS_USAGE}`"


def test_usage_of_all() -> None:
    lines = usage().splitlines()
    assert lines[0] == "Usage:"
    assert "`/ops help`" in lines
    assert f"`{RESTART_USAGE}`" in lines
    assert f"`{STATUS_USAGE}`" in lines
    assert usage("no-such-command") == usage()


def test_help_text_lists_restart() -> None:
    text = help_text()
    assert text.splitlines()[0].startswith("*opsgate*")
    assert f"• `{RESTART_USAGE}`: rolling restart" in text
    assert f"• `{STATUS_USAGE}`" in text
    assert "• `/ops help`" in text


_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20).filter(
    lambda s: not s.startswith("-")
)


_REASON = st.text(
    alphabet=st.characters(
        exclude_categories=("Cs", "Cc"),
        exclude_characters='"\\\u201c\u201d\u2018\u2019',
    ),
    min_size=1,
    max_size=40,
).filter(lambda s: not s.startswith("-"))


@settings(max_examples=200, database=None, deadline=None)
@given(
    kind=st.sampled_from(["", "deploy/", "sts/", "ds/"]),
    name=_WORD,
    namespace=_WORD,
    reason=_REASON,
)
def test_property_restart_round_trips(kind: str, name: str, namespace: str, reason: str) -> None:
    # as Slack delivers it: &, < and > escaped
    command = parse(escape(f'restart {kind}{name} -n {namespace} --reason "{reason}"'))
    assert isinstance(command.params, RestartParams)
    assert command.params.name == name
    assert command.params.namespace == namespace == command.namespace
    assert command.reason == reason
    assert (command.params.kind is None) == (kind == "")


def test_parse_the_other_request_kinds() -> None:
    scale = parse("scale statefulset/db 3 -n payments --env prod")
    assert scale.name == "scale"
    assert scale.namespace == "payments"
    assert scale.env == "prod"
    assert scale.params == ScaleParams(
        name="db", kind=WorkloadKind.STATEFULSET, namespace="payments", replicas=3
    )
    rollback = parse("rollback deploy/api --to-revision 4 -n payments")
    assert rollback.params == RollbackParams(name="api", namespace="payments", to_revision=4)
    assert parse("history api -n payments") == Command(
        "history", namespace="payments", workload="api"
    )
    access = parse("access payments --role edit --for 1h30m --reason INC-7")
    assert access.params == AccessParams(namespace="payments", role="edit", duration_seconds=5400)
    assert (access.namespace, access.reason) == ("payments", "INC-7")
    rotate = parse("rotate /secret/prod/db/ --restart api,worker -n payments")
    assert rotate.path == "secret/prod/db"
    assert rotate.params == RotateParams(
        path="secret/prod/db", restart=("api", "worker"), namespace="payments"
    )
    restore = parse("restore /secret/prod/db --to-version 2")
    assert (restore.path, restore.namespace) == ("secret/prod/db", None)
    assert restore.params == RestoreParams(path="secret/prod/db", to_version=2)
    assert parse("grants") == Command("grants")
    assert parse("grants --page 3") == Command("grants", page=3)
    assert parse("status --page 2") == Command("status", page=2)
    assert parse("status 12") == Command("status", request_id=12)
    assert parse("revoke #12 --reason done") == Command("revoke", grant_id=12, reason="done")
    extend = parse("extend 12 30m")
    assert (extend.grant_id, extend.params) == (12, ExtendParams(grant_id=12, seconds=1800))


def test_a_break_glass_justification_is_the_reason_when_none_is_given() -> None:
    parsed = parse('restart api -n payments --break-glass "site down"')
    assert (parsed.break_glass, parsed.reason) == ("site down", "site down")
    parsed = parse('restart api -n payments --reason leak --break-glass "site down"')
    assert (parsed.break_glass, parsed.reason) == ("site down", "leak")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("scale daemonset/agent 2 -n ns", ["a DaemonSet cannot be scaled"]),
        ("scale api -1 -n ns", ["replicas cannot be negative"]),
        ("scale api many -n ns", ["'many' is not a number of replicas"]),
        ("rollback statefulset/db -n ns", ["only Deployments have a rollout history"]),
        ("rollback api --to-revision 0 -n ns", ["revisions start at 1"]),
        ("rotate secret/x --restart api", ["--restart needs the workloads' namespace"]),
        ("access ns --for soon", ["soon"]),
        ("revoke twelve", ["'twelve' is not a grant ID"]),
    ],
)
def test_the_other_kinds_errors_say_what_and_show_usage(text: str, words: list[str]) -> None:
    with pytest.raises(CommandError) as info:
        parse(text)
    message = str(info.value)
    for word in words:
        assert word in message
    assert message.endswith(usage(text.split()[0]))


# --- issue 13, item 4: no abbreviations, dash values, help per command, typos -----------------


@pytest.mark.parametrize(
    ("text", "unrecognized"),
    [
        ("restart web -n shop --b 'INC-1'", "--b"),
        ("rollback web -n shop --to 3", "--to"),
        ("restart web -n shop --rea OOM", "--rea"),
        ("access shop --fo 1h", "--fo"),
    ],
)
def test_an_abbreviated_option_is_refused_not_guessed(text: str, unrecognized: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse(text)
    assert f"unrecognized arguments: {unrecognized}" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("restart web -n shop --reason '-5% error budget'", "-5% error budget"),
        ("scale web 3 -n shop --reason '--dry-run was wrong'", "--dry-run was wrong"),
        ("restart web --reason '-1' -n shop", "-1"),
    ],
)
def test_a_reason_may_begin_with_a_dash(text: str, reason: str) -> None:
    assert parse(text).reason == reason


def test_a_break_glass_justification_may_begin_with_a_dash() -> None:
    parsed = parse("restart web -n shop --break-glass '-- prod is down'")
    assert parsed.break_glass == "-- prod is down"


def test_help_for_each_command_gives_its_usage_and_an_example_that_parses() -> None:
    for word, sub in SUBCOMMANDS.items():
        text = help_text(word)
        assert text.startswith(f"*/ops {word}*: {sub.summary}")
        assert f"Usage: `{sub.usage}`" in text
        assert sub.example, f"{word} has no example"
        assert f"Example: `{sub.example}`" in text
        assert parse(sub.example.removeprefix("/ops ")).name in (
            word,
            SUBCOMMANDS_NAMES.get(word, word),
        )
    assert parse("help scale") == Command("help", topic="scale")


SUBCOMMANDS_NAMES = {
    **{spec.word: spec.name for spec in KINDS},
    **{spec.catalogue.word: "catalogue" for spec in KINDS if spec.catalogue is not None},
}


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("restrat", "restart"), ("sclae", "scale"), ("rolback", "rollback"), ("grant", "grants")],
)
def test_a_typo_in_a_command_name_suggests_the_nearest(typo: str, meant: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse(f"{typo} web -n shop")
    assert f"Unknown command `{typo}`. Did you mean `{meant}`?" in str(caught.value)
    assert f"Did you mean `{meant}`?" in help_text(typo)


def test_nothing_close_suggests_nothing_and_help_escapes_what_was_typed() -> None:
    with pytest.raises(CommandError) as caught:
        parse("xyzzy")
    assert "Did you mean" not in str(caught.value)
    assert "`&lt;!channel&gt;`" in help_text("<!channel>")
