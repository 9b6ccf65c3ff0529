"""The run kind's pieces: the policy's ``runbooks`` section as the loader validates it, the
parameters' checks, the rendered Job, the log's bounds, and the Job reader against the fake
cluster over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actions.backends.kubernetes import KubernetesBackend
from actions.base import RolloutWatch
from actions.errors import Invalid
from actions.registry import build_follower
from actions.runbook import RunbookSpec, check_values, render_job
from actions.runbook_job import clean_log
from approvals.policy import PolicyError, parse_policy
from tests.fakes.kube import FakeKubernetes, deployment, job_controller, write_kubeconfig

HEAD = """\
version: 1
approval_channel: C0APPROVALS
groups:
  sre: {users: [U0SRE1, U0SRE2]}
environments:
  prod: {namespaces: [payments]}
  staging: {namespaces: ["staging-*"]}
"""

RUNBOOK = """\
runbooks:
  db-vacuum:
    description: VACUUM one table
    environments: [prod]
    job: {image: tools:1, command: [/vacuum], active_deadline_seconds: 60}
    parameters:
      table: {type: string, pattern: "[a-z]+"}
"""


def load(text: str) -> Any:
    return parse_policy(HEAD + text)


def problems(text: str) -> str:
    with pytest.raises(PolicyError) as raised:
        load(text)
    return str(raised.value)


def spec(**parameters: Any) -> RunbookSpec:
    return RunbookSpec.model_validate(
        {
            "description": "d",
            "environments": ["prod"],
            "job": {"image": "i", "command": ["/x"], "active_deadline_seconds": 60},
            "parameters": parameters,
        }
    )


def test_the_example_policy_declares_a_runbook_the_loader_accepts() -> None:
    loaded = parse_policy((Path(__file__).parent.parent / "policy.yml").read_bytes())
    assert loaded.policy.runbooks
    assert any("run" in rule.match.action for rule in loaded.policy.rules)


@pytest.mark.parametrize(
    ("runbooks", "expected"),
    [
        (
            RUNBOOK.replace("[prod]", "[qa]"),
            "policy.yml:11: runbooks.db-vacuum.environments[0]: unknown environment 'qa'",
        ),
        (RUNBOOK.replace('"[a-z]+"', '"[a-z"'), "not a valid regular expression"),
        (RUNBOOK.replace("db-vacuum:", "DB_Vacuum:"), "a runbook name is 1-40 of a-z"),
        (RUNBOOK.replace("db-vacuum:", f"{'x' * 41}:"), "a runbook name is 1-40 of a-z"),
        (RUNBOOK.replace("table:", "Table:"), "names are lower case"),
        (
            RUNBOOK.replace("[/vacuum],", "[/vacuum], env: {TABLE: x},"),
            "environment variable(s) set twice: TABLE",
        ),
        (
            RUNBOOK + "      n: {type: integer, min: 5, max: 1}\n",
            "min (5) is greater than max (1)",
        ),
        (
            RUNBOOK + "      m: {type: enum, values: [a, b], default: c}\n",
            "default: parameter 'm': 'c' is not one of a, b",
        ),
        (RUNBOOK + "      x: {type: float}\n", "does not match any of the expected tags"),
        (
            RUNBOOK.replace("active_deadline_seconds: 60", "command2: []"),
            "active_deadline_seconds",
        ),
        (RUNBOOK.replace("[/vacuum]", "[]"), "command"),
        (
            RUNBOOK.replace("[/vacuum],", "[/vacuum], ttl_seconds_after_finished: 0,"),
            "greater than or equal to 60",
        ),
    ],
)
def test_bad_runbooks_are_refused_when_the_policy_loads(runbooks: str, expected: str) -> None:
    rules = "rules:\n  - match: {action: run}\n    approvers: [sre]\n"
    assert expected in problems(runbooks + rules)


def test_an_auto_rule_may_run_an_irreversible_runbook_only_when_it_says_so() -> None:
    auto = "rules:\n  - match: {action: run, environment: prod}\n    approval: auto\n"
    assert (
        "'approval: auto' on irreversible request kinds (runbook db-vacuum) needs "
        "'allow_irreversible_auto: true'"
    ) in problems(RUNBOOK + auto)
    load(RUNBOOK + auto + "    allow_irreversible_auto: true\n")
    load(RUNBOOK.replace("    job:", "    reversible: true\n    job:") + auto)
    staging = auto.replace("prod", "staging")  # the runbook cannot run there
    load(RUNBOOK + staging)


def test_the_deciding_rule_hands_the_runbooks_to_the_kind_and_only_for_run() -> None:
    from approvals.policy import RequestContext, decide

    loaded = load(
        RUNBOOK
        + "rules:\n  - match: {action: run}\n    approvers: [sre]\n"
        + "  - match: {action: restart}\n    approvers: [sre]\n"
    )
    run = decide(loaded, RequestContext("run", "U0DEV1", "prod", "payments"))
    assert run.settings["runbooks"]["db-vacuum"]["job"]["image"] == "tools:1"
    restart = decide(loaded, RequestContext("restart", "U0DEV1", "prod", "payments"))
    assert "runbooks" not in restart.settings


def test_a_run_is_as_reversible_as_its_runbook_for_the_decision_and_earned_autonomy() -> None:
    from actions.runbook import RunParams
    from approvals.policy import RequestContext, decide, request_reversible

    reversible = RUNBOOK.replace(
        "  db-vacuum:",
        "  note:\n    description: a note\n"
        "    environments: [prod]\n    reversible: true\n"
        "    job: {image: i, command: [/note], active_deadline_seconds: 60}\n  db-vacuum:",
    )
    loaded = load(reversible + "rules:\n  - match: {action: run}\n    approvers: [sre]\n")
    policy = loaded.policy
    vacuum = RunParams(runbook="db-vacuum", namespace="payments")
    note = RunParams(runbook="note", namespace="payments")
    assert request_reversible(policy, "run", vacuum, True, "prod") is False
    assert request_reversible(policy, "run", note, True, "prod") is True
    # an unknown runbook, or one asked for where it may not run, is refused by the preview
    # (saying why), not called irreversible here
    unknown = RunParams(runbook="ghost", namespace="payments")
    assert request_reversible(policy, "run", unknown, True, "prod") is True
    elsewhere = RunParams(runbook="db-vacuum", namespace="staging-web")
    assert request_reversible(policy, "run", elsewhere, True, "staging") is True

    def decided(params: RunParams) -> bool:
        reversible = request_reversible(policy, "run", params, True, "prod")
        ctx = RequestContext("run", "U0DEV1", "prod", "payments", kind_reversible=reversible)
        return decide(loaded, ctx).reversible

    # approvals.autonomy.apply never makes an irreversible decision auto
    assert (decided(vacuum), decided(note)) == (False, True)


def test_values_become_environment_variables_with_defaults() -> None:
    runbook = spec(
        table={"type": "string", "pattern": "[a-z_]+"},
        batch={"type": "integer", "min": 1, "max": 10, "default": 5},
        mode={"type": "enum", "values": ["a", "b"], "default": "a"},
        note={"type": "string", "required": False},
    )
    assert check_values("r", runbook, {"table": "t", "batch": "007"}) == {
        "TABLE": "t",
        "BATCH": "7",
        "MODE": "a",
    }
    with pytest.raises(Invalid) as raised:
        check_values("r", runbook, {"batch": "11", "x": "1", "mode": "c"})
    message = str(raised.value)
    for part in (
        "unknown parameter(s) x (r takes: table, batch, mode, note)",
        "parameter 'batch': 11 is above the maximum of 10",
        "parameter 'mode': 'c' is not one of a, b",
        "missing parameter 'table' (string matching [a-z_]+)",
    ):
        assert part in message
    with pytest.raises(Invalid, match="holds a NUL character"):
        check_values("r", runbook, {"table": "a\0b"})
    with pytest.raises(Invalid, match="longer than 256 characters"):
        check_values("r", spec(text={"type": "string"}), {"text": "x" * 257})
    with pytest.raises(Invalid, match="'99999999999999999999' is not a whole number"):
        check_values("r", spec(n={"type": "integer"}), {"n": "9" * 20})


def test_the_job_runs_the_command_list_with_no_shell_and_secrets_by_reference() -> None:
    runbook = RunbookSpec.model_validate(
        {
            "description": "d",
            "environments": ["prod"],
            "job": {
                "image": "i",
                "command": ["/x", "--flag"],
                "active_deadline_seconds": 60,
                "ttl_seconds_after_finished": None,
                "secret_env": {"TOKEN": {"secret": "s", "key": "k"}},
            },
        }
    )
    job = render_job("r", runbook, "payments", {"A": "$(reboot)"})
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["/x", "--flag"]
    assert container["env"] == [
        {"name": "A", "value": "$(reboot)"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert "serviceAccountName" not in pod
    assert pod["restartPolicy"] == "Never"


def test_the_log_is_bounded_and_cannot_break_its_code_block() -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    assert clean_log(text).splitlines() == [f"line {i}" for i in range(80, 100)]
    assert clean_log(text, limit=31) == "line 96\nline 97\nline 98\nline 99"
    assert clean_log("x" * 5000, limit=10) == "x" * 10
    assert clean_log("a```b\x1b[31mred\x07\tend\n") == "a'''b[31mred\tend"
    assert clean_log("é" * 10, limit=5) == "éé"  # never half a character


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeKubernetes, KubernetesBackend]]:
    with FakeKubernetes() as fake:
        fake.add(deployment("web", "payments"))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"prod": fake})
        backend = KubernetesBackend(kubeconfig=str(kubeconfig), request_timeout=5.0)
        yield fake, backend
        backend.close()


def test_the_reader_waits_then_reports_a_job_still_running_past_its_timeout(
    cluster: tuple[FakeKubernetes, KubernetesBackend],
) -> None:
    fake, backend = cluster
    job = render_job("r", spec(), "payments", {})
    job["metadata"]["name"] = "r-1"
    backend.create_job("prod", "payments", job)
    reader = build_follower(kube=backend, clock=lambda: datetime.now(UTC))
    watch = RolloutWatch("Job", "payments", "r-1", "prod", 180.0)
    assert reader.check(watch, elapsed=10, timeout=180) is None
    late = reader.check(watch, elapsed=200, timeout=180)
    assert late is not None
    assert (late.done, late.reason) == (False, "Timeout")
    assert late.summary.startswith("job/r-1 was still running after 200 s, past its deadline")
    assert late.summary.endswith(
        "the log of pod/"
        + job_controller(fake).pods_of("payments", "r-1")[0]["metadata"]["name"]
        + " is empty"
    )
    # a workload watch still goes to the rollout reader
    rollout = reader.check(
        RolloutWatch("Deployment", "payments", "web", "prod"), elapsed=0, timeout=10
    )
    assert rollout is not None
    assert rollout.done


def test_a_watch_stored_before_timeouts_existed_still_loads() -> None:
    stored = {"kind": "Deployment", "namespace": "n", "name": "w", "kube_context": None}
    assert RolloutWatch.from_json(stored).timeout is None
    job = RolloutWatch("Job", "n", "r-1", "prod", 720.0)
    assert RolloutWatch.from_json(job.as_json()) == job


def test_policy_check_warns_of_a_runbook_no_rule_lets_anyone_run() -> None:
    from approvals.policy import policy_warnings

    denied = "rules:\n  - match: {action: run, environment: prod}\n    deny: not here\n"
    elsewhere = "  - match: {action: [run, restart], environment: staging}\n    approvers: [sre]\n"
    loaded = load(RUNBOOK + denied + elsewhere)
    [warning] = [w for w in policy_warnings(loaded) if w.field.startswith("runbooks")]
    assert warning.render("policy.yml") == (
        "policy.yml:9: runbooks.db-vacuum: no rule lets anyone run it (action run in prod)"
    )
    allowed = load(RUNBOOK + "rules:\n  - match: {action: run}\n    approvers: [sre]\n")
    assert not [w for w in policy_warnings(allowed) if w.field.startswith("runbooks")]


def test_the_catalogue_says_so_when_nothing_may_be_run() -> None:
    from actions.runbook import RunbookSettings
    from actions.runbook_job import catalogue

    runbooks = RunbookSettings(runbooks={"r": spec(n={"type": "integer", "min": 1})})
    assert catalogue(runbooks, {"prod": ["payments"]}, lambda env, ns: False) == [
        "There is no runbook you may run; the platform team declares them in the policy."
    ]
    assert catalogue(runbooks, {"prod": ["payments"]}, lambda env, ns: True) == [
        "Runbooks you may run (each goes through approval):",
        "• *r*: d",
        "    `/ops run r n=<integer 1..> -n <namespace>`",
        "    where: payments (prod)",
    ]


def test_the_printed_cluster_role_runs_a_runbook_and_only_a_policy_with_runbooks_gets_jobs(
    tmp_path: Path,
) -> None:
    from actions.errors import Forbidden
    from approvals.rbac import cluster_role
    from tests.fakes.kube_rbac import RbacAuthorizer

    rules = "rules:\n  - match: {action: run}\n    approvers: [sre]\n"
    without = cluster_role(load("rules:\n  - match: {action: restart}\n    approvers: [sre]\n"))
    assert not [r for r in without["rules"] if "jobs" in r["resources"]]
    role = cluster_role(load(RUNBOOK + rules))
    with FakeKubernetes() as fake:
        fake.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments"}})
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"prod": fake})
        backend = KubernetesBackend(kubeconfig=str(kubeconfig), request_timeout=5.0)
        try:
            fake.rbac = RbacAuthorizer(role["rules"], store=fake.store, types=fake.types)
            job = render_job("r", spec(), "payments", {})
            trial = {**job, "metadata": {**job["metadata"], "generateName": "r-"}}
            backend.create_job("prod", "payments", trial, dry_run=True)
            job["metadata"]["name"] = "r-1"
            backend.create_job("prod", "payments", job)
            job_controller(fake).succeed("payments", "r-1", log="done\n")
            reader = build_follower(kube=backend, clock=lambda: datetime.now(UTC))
            watch = RolloutWatch("Job", "payments", "r-1", "prod", 180.0)
            result = reader.check(watch, elapsed=5, timeout=180)
            assert result is not None
            assert result.done
            assert result.summary.endswith("log:\n```\ndone\n```")
            assert fake.rbac.denied == []
            fake.rbac = RbacAuthorizer(without["rules"], store=fake.store, types=fake.types)
            with pytest.raises(Forbidden):
                backend.create_job("prod", "payments", {**job, "metadata": {"name": "r-2"}})
        finally:
            backend.close()
