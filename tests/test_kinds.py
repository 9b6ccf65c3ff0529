"""Every registered request kind round-trips through the grammar, the policy and the registry.

A kind declares itself once (``actions.spec.KindSpec`` in its module, listed in
``actions.registry.KINDS``); these tests check that what ``/ops`` parses, what the policy
accepts and decides, and what :func:`actions.registry.build_registry` builds all agree with
that declaration, for every kind, so that a kind added later is checked without a line here.
"""

from __future__ import annotations

import argparse
import json
import shlex
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from actions.backends.kubernetes import KubernetesBackend
from actions.backends.vault import VaultBackend
from actions.base import Target
from actions.registry import KINDS, KINDS_BY_NAME, build_registry
from actions.runbook import JobsPort
from actions.spec import Arg, ArgType, Backends, KindSpec, Scope
from approvals.policy import (
    KNOWN_ACTIONS,
    REVERSIBLE,
    Outcome,
    PolicyError,
    RequestContext,
    decide,
    parse_policy,
)
from bot.grammar import SUBCOMMANDS, Command, help_text, kind_subcommand, parse, usage
from tests.fakes.kube import FakeKubernetes, deployment, write_kubeconfig
from tests.fakes.openbao import OpenBao

pytest_plugins = ["tests.helpers.vault"]

IDS = [spec.name for spec in KINDS]
NAMESPACE = "payments"
PATH = "secret/prod/payments/db"


def sample(spec: KindSpec) -> tuple[str, dict[str, str]]:
    """A command line that gives every argument of ``spec`` (the options too), and the text
    given for each."""
    texts: dict[str, str] = {}
    for arg in spec.grammar:
        if arg.name == "namespace":
            texts[arg.name] = NAMESPACE
        elif arg.type is ArgType.INTEGER:
            texts[arg.name] = str((arg.low or 0) + 2)
        elif arg.type is ArgType.DURATION:
            texts[arg.name] = "1h30m"
        elif arg.type is ArgType.WORKLOAD:
            kind = (arg.kinds or ("deployment",))[0]
            texts[arg.name] = f"{str(kind).lower()}/api"
        elif arg.type is ArgType.WORKLOADS:
            texts[arg.name] = "deployment/api,worker"
        elif arg.type is ArgType.VAULT_PATH:
            texts[arg.name] = f"/{PATH}/"
        elif arg.type is ArgType.PARAMETERS:
            texts[arg.name] = "key=value"
        else:
            texts[arg.name] = f"{arg.name}-1"
    words = [spec.word]
    for arg in spec.grammar:
        words += [texts[arg.name]] if arg.positional else [arg.flags[-1], texts[arg.name]]
    return " ".join(words), texts


def test_the_kinds_have_distinct_names_and_settings_keys() -> None:
    assert len(set(IDS)) == len(IDS)
    keys = [k for s in KINDS if s.rule_settings for k in s.rule_settings.model_fields]
    assert len(set(keys)) == len(keys)
    assert {s.decided_with for s in KINDS if s.decided_with} <= set(IDS)


# --- grammar -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", KINDS, ids=IDS)
def test_a_kind_round_trips_through_the_grammar(spec: KindSpec) -> None:
    text, texts = sample(spec)
    command = parse(f"{text} --reason 'a reason given'")
    assert isinstance(command, Command)
    assert command.name == spec.name
    assert isinstance(command.params, spec.params_model)
    assert command.reason == "a reason given"
    params = command.params.model_dump()
    for arg in spec.grammar:
        value = arg.convert(texts[arg.name])
        if arg.type is ArgType.WORKLOAD:
            kind, name = value
            assert params["name"] == name
            assert params.get("kind", kind) == kind
        elif arg.type is ArgType.PARAMETERS:
            assert params[arg.name] == dict([value])
        else:
            assert params[arg.name] == value
    if spec.scope is Scope.NAMESPACE:
        assert command.namespace == NAMESPACE
    if spec.scope is Scope.VAULT_PATH:
        assert command.path == PATH
    # the usage line and help are the declaration's
    assert usage(spec.word) == f"Usage: `{SUBCOMMANDS[spec.word].usage}`"
    line = SUBCOMMANDS[spec.word].usage
    assert line.startswith(f"/ops {spec.word} ")
    for arg in spec.grammar:
        assert (arg.metavar or "") in line
        assert arg.positional or arg.flags[0] in line
    assert f"• `{line}`: {spec.summary}" in help_text()


@pytest.mark.parametrize("spec", KINDS, ids=IDS)
def test_a_kinds_params_are_written_back_as_the_command_that_asks_for_them(
    spec: KindSpec,
) -> None:
    text, _texts = sample(spec)
    params = parse(text).params
    assert params is not None
    line = spec.command_line(params)
    assert line.startswith(f"/ops {spec.word} ")
    assert parse(line.removeprefix("/ops ")).params == params


@pytest.mark.parametrize("spec", KINDS, ids=IDS)
def test_a_missing_required_argument_names_it_and_shows_the_usage(spec: KindSpec) -> None:
    required = [
        a for a in spec.grammar if (a.positional or a.required) and a.type is not ArgType.PARAMETERS
    ]
    text, texts = sample(spec)
    for arg in required:
        words = text.split()
        if arg.positional:
            words.remove(texts[arg.name])
        else:
            at = words.index(arg.flags[-1])
            del words[at : at + 2]
        with pytest.raises(ValueError, match="Usage") as info:
            parse(" ".join(words))
        assert (arg.flags[0] if arg.flags else arg.name) in str(info.value)


# --- policy --------------------------------------------------------------------------------------

BASE = """\
version: 1
approval_channel: C0APPROVALS
groups:
  sre: {users: [U0SRE1, U0SRE2]}
environments:
  prod: {namespaces: [payments]}
"""


def policy_text(rules: list[dict[str, Any]]) -> str:
    return BASE + yaml.safe_dump({"rules": rules}, sort_keys=False)


def context(spec: KindSpec) -> RequestContext:
    return RequestContext(
        action=spec.name,
        requester="U0DEV1",
        environment="prod" if spec.scope is Scope.NAMESPACE else None,
        namespace=NAMESPACE if spec.scope is Scope.NAMESPACE else None,
        path=PATH if spec.scope is Scope.VAULT_PATH else None,
        at=datetime(2030, 1, 1, tzinfo=UTC),
        kind_reversible=spec.reversible,
    )


@pytest.mark.parametrize("spec", KINDS, ids=IDS)
def test_a_kind_round_trips_through_the_policy(spec: KindSpec) -> None:
    assert spec.name in KNOWN_ACTIONS
    assert REVERSIBLE[spec.name] is spec.reversible
    rule: dict[str, Any] = {"name": spec.name, "match": {"action": spec.name}, "approvers": ["sre"]}
    if spec.rule_settings is not None:  # every key a rule may give the kind, at its default
        rule.update(json.loads(spec.rule_settings().model_dump_json()))
    loaded = parse_policy(policy_text([rule]))
    decision = decide(loaded, context(spec))
    assert (decision.outcome, decision.rule_index) == (Outcome.APPROVAL, 0)
    assert decision.reversible is spec.reversible
    # Decision.settings carries every kind's settings, JSON all through
    for other in KINDS:
        if other.rule_settings is not None:
            applies = other.name == spec.name
            keys = other.rule_settings().as_settings(applies=applies).keys()
            assert set(keys) <= set(decision.settings)
    if spec.rule_settings is not None:  # the rule's values, as the kind reads them back
        own = spec.rule_settings().as_settings(applies=True)
        assert {k: decision.settings[k] for k in own} == own
    assert json.loads(json.dumps(dict(decision.settings))) == dict(decision.settings)
    # a kind decided with another is decided by that one's rule
    if spec.decided_with is not None:
        other = {"match": {"action": spec.decided_with}, "approvers": ["sre"]}
        assert decide(parse_policy(policy_text([other])), context(spec)).rule_index == 0


@pytest.mark.parametrize("spec", [s for s in KINDS if s.rule_settings], ids=lambda s: s.name)
def test_a_kinds_settings_are_refused_on_another_kinds_rule(spec: KindSpec) -> None:
    assert spec.rule_settings is not None
    other = next(s for s in KINDS if s.name != spec.name and s.decided_with != spec.name)
    for key, value in json.loads(spec.rule_settings().model_dump_json()).items():
        rule = {"match": {"action": other.name}, "approvers": ["sre"], key: value}
        with pytest.raises(PolicyError) as info:
            parse_policy(policy_text([rule]))
        assert [(i.field, i.message) for i in info.value.issues] == [
            (f"rules[0].{key}", f"'{key}' applies to {spec.name} rules only")
        ]


# --- registry ------------------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as fake:
        yield fake


@pytest.fixture
def kube(tmp_path: Path, cluster: FakeKubernetes) -> Iterator[KubernetesBackend]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"prod": cluster})
    backend = KubernetesBackend(kubeconfig=str(kubeconfig), request_timeout=2.0)
    yield backend
    backend.close()


@pytest.fixture
def vault(openbao: OpenBao) -> Iterator[VaultBackend]:
    backend = VaultBackend(url=openbao.url, token=openbao.root_token)
    yield backend
    backend.close()


def test_every_kind_round_trips_through_the_registry(
    kube: KubernetesBackend, vault: VaultBackend
) -> None:
    registry = build_registry(kube=kube, vault=vault, clock=lambda: datetime.now(UTC))
    assert list(registry) == IDS
    for spec in KINDS:
        kind = registry[spec.name]
        assert (kind.name, kind.reversible, kind.params_model) == (
            spec.name,
            spec.reversible,
            spec.params_model,
        )
        assert spec.word in SUBCOMMANDS
    without_vault = build_registry(kube=kube, clock=lambda: datetime.now(UTC))
    needs_vault = {s.name for s in KINDS if s.scope is Scope.VAULT_PATH}
    assert set(without_vault) == set(IDS) - needs_vault


@runtime_checkable
class _RoleReader(Protocol):
    def get_cluster_role(self, context: str | None, name: str) -> dict[str, Any]: ...


@runtime_checkable
class _CronJobRunner(Protocol):
    def create_cron_job(self, context: str | None, namespace: str, body: dict[str, Any]) -> Any: ...


def test_a_kind_finds_the_adapter_that_implements_the_port_it_declares(
    kube: KubernetesBackend, vault: VaultBackend
) -> None:
    backends = Backends(kube=kube, vault=vault, clock=lambda: datetime.now(UTC))
    assert backends.adapter(_RoleReader) is kube
    assert backends.adapter(JobsPort) is kube  # the run kind's port, in actions/runbook.py
    assert backends.adapter(_CronJobRunner) is None  # no adapter: such a kind is not built


def test_the_undo_of_a_scale_is_the_scale_back_to_the_count_it_read(
    cluster: FakeKubernetes, kube: KubernetesBackend
) -> None:
    cluster.add(deployment("api", NAMESPACE, replicas=3))
    scale = build_registry(kube=kube, clock=lambda: datetime.now(UTC))["scale"]
    params = parse(f"scale deploy/api 5 -n {NAMESPACE}").params
    assert params is not None
    preview = scale.preview(params, target=Target("prod", "prod", NAMESPACE))
    spec = KINDS_BY_NAME["scale"]
    assert spec.undo is not None
    undo = spec.undo(params, preview.facts)
    assert undo is not None
    assert KINDS_BY_NAME[undo.kind].command_line(undo.params) == (
        f"/ops scale deployment/api 3 -n {NAMESPACE}"
    )


def test_the_undo_of_a_rotation_restores_the_version_it_read(
    openbao: OpenBao, kube: KubernetesBackend, vault: VaultBackend
) -> None:
    inside = f"prod/{uuid.uuid4().hex[:8]}/db"
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=inside, secret={"password": "p"}, mount_point="secret"
    )
    registry = build_registry(kube=kube, vault=vault, clock=lambda: datetime.now(UTC))
    params = parse(f"rotate secret/{inside}").params
    assert params is not None
    preview = registry["rotate"].preview(params, target=Target("prod", None, None))
    spec = KINDS_BY_NAME["rotate"]
    assert spec.undo is not None
    undo = spec.undo(params, preview.facts)
    assert undo is not None
    line = KINDS_BY_NAME[undo.kind].command_line(undo.params)
    assert line == f"/ops restore secret/{inside} --to-version 1"
    restore = parse(line.removeprefix("/ops "))
    assert (restore.name, restore.params) == ("restore", undo.params)
    assert KINDS_BY_NAME["restore"].undo is not None


# --- what a kind may declare that today's kinds do not use ------------------------------------


class _RunParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    runbook: str
    parameters: dict[str, str] = {}
    namespace: str


RUN = KindSpec(
    name="runbook",
    command="run",
    summary="run a runbook",
    grammar=(
        Arg("runbook", metavar="<runbook>"),
        Arg("parameters", ArgType.PARAMETERS),
        Arg("namespace", flags=("-n", "--namespace"), metavar="<namespace>"),
    ),
    params_model=_RunParams,
    scope=Scope.NAMESPACE,
    reversible=False,
    build=lambda _backends: None,
)


def _parser(spec: KindSpec) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"/ops {spec.word}", add_help=False, exit_on_error=False)
    kind_subcommand(spec).configure(parser)
    return parser


def test_a_kind_takes_key_value_parameters_under_its_own_command_word() -> None:
    sub = kind_subcommand(RUN)
    assert sub.usage == (
        "/ops run <runbook> [key=value …] -n <namespace> "
        "[--env ENV] [--reason TEXT] [--break-glass REASON]"
    )
    words = ["db-migrate", "version=42", "note=a b=c", "empty=", "-n", NAMESPACE]
    command = sub.build(_parser(RUN).parse_args(words))
    assert (command.name, command.namespace) == ("runbook", NAMESPACE)
    wanted = {"version": "42", "note": "a b=c", "empty": ""}
    assert command.params == _RunParams(
        runbook="db-migrate", parameters=wanted, namespace=NAMESPACE
    )
    line = RUN.command_line(command.params)
    assert line == f"/ops run db-migrate version=42 'note=a b=c' empty= -n {NAMESPACE}"
    again = sub.build(_parser(RUN).parse_args(shlex.split(line)[2:]))
    assert again.params == command.params
    none = sub.build(_parser(RUN).parse_args(["db-migrate", "-n", NAMESPACE]))
    assert none.params == _RunParams(runbook="db-migrate", namespace=NAMESPACE)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["r", "a=1", "a=2", "-n", "ns"], "a is given twice"),
        (["r", "1a=2", "-n", "ns"], "'1a=2' is not key=value"),
        (["r", "flag", "-n", "ns"], "'flag' is not key=value"),
    ],
)
def test_bad_key_value_parameters_say_which(words: list[str], message: str) -> None:
    with pytest.raises((ValueError, argparse.ArgumentError), match=message):
        kind_subcommand(RUN).build(_parser(RUN).parse_args(words))
