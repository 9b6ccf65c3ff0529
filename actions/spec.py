"""What a request kind declares about itself, as data: :class:`KindSpec`.

Each kind module (``actions/restart.py`` …) holds one ``KIND = KindSpec(...)``: its command word,
its grammar (a tuple of typed :class:`Arg`), its params model, its scope (what the gate resolves
the environment from), whether it is reversible, the rule settings a policy may give it
(:class:`RuleSettings`) and how to build it from the :class:`Backends`. ``actions.registry.KINDS``
lists them; the ``/ops`` grammar and help (``bot.grammar``), the policy's known actions,
reversibility and rule settings (``approvals.policy``) are derived from that list.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol, TypeVar, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict

from actions.durations import format_duration, parse_duration
from actions.workloads import WorkloadKind, parse_workload

if TYPE_CHECKING:
    from actions.base import ActionKind
    from actions.kube import KubernetesPort
    from actions.rollout import RolloutResult
    from actions.vault import VaultPort

P = TypeVar("P")

MAX_ID = 2**31 - 1
"""The largest request or grant ID, replica count or revision opsgate accepts: a 32-bit
signed integer, as PostgreSQL's ``integer`` and Kubernetes' ``int32`` replicas."""

Loc = tuple[int | str, ...]
"""Where in a policy rule a problem is: ``("rotate", "generator", "charset")``."""


def _as_list(value: Any) -> Any:
    """Let a YAML scalar stand for a one-item list (``action: restart``)."""
    if isinstance(value, str):
        return [value]
    return value


StrList = Annotated[list[str], BeforeValidator(_as_list)]
"""A list of strings in a policy file, where one string may stand for a list of one."""


class Scope(StrEnum):
    """What a request of a kind acts on, and so what the gate resolves its environment from.

    ``namespace``: a Kubernetes namespace (the ``namespace`` argument; the policy's
    ``environments`` place it); ``vault_path``: a Vault path (the ``path`` argument; rules match
    it with ``match.path``), with an optional namespace for the workloads it touches;
    ``cluster``: the whole cluster (no namespace: the request has no environment unless
    ``--env`` names one).
    """

    NAMESPACE = "namespace"
    VAULT_PATH = "vault_path"
    CLUSTER = "cluster"


class ArgType(StrEnum):
    """How an argument's text becomes a value.

    ``text``: as typed; ``integer``: ASCII digits within ``Arg.low``..``Arg.high``; ``duration``:
    ``30m``, ``1h30m`` … as seconds (:func:`actions.durations.parse_duration`); ``workload``:
    ``name`` or ``kind/name`` (``deploy/api``), as ``(WorkloadKind | None, name)``, setting the
    params' ``name`` and, when the params have one, ``kind``; ``workloads``: a comma-separated
    list of workload references, as a tuple of the references; ``vault_path``: a Vault path,
    leading and trailing slashes dropped; ``parameters``: zero or more ``key=value`` words (a
    positional argument, last), as a dict; a key is a letter or ``_`` then letters, digits or
    ``_`` (it may become an environment variable's name), given at most once.
    """

    TEXT = "text"
    INTEGER = "integer"
    DURATION = "duration"
    WORKLOAD = "workload"
    WORKLOADS = "workloads"
    VAULT_PATH = "vault_path"
    PARAMETERS = "parameters"


_PARAMETER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Arg:
    """One argument of a kind's command.

    ``name`` is the params field it fills (``workload`` arguments fill ``name`` and ``kind``);
    ``flags`` are its option strings (``("-n", "--namespace")``; empty: a positional argument);
    ``metavar`` is how the usage line shows its value; ``required`` applies to options
    (positionals always are). For ``integer``: ``low`` and ``high`` bound it (inclusive),
    ``noun`` names it in errors ("number of replicas") and ``below`` is the message for a value
    under ``low``. For ``workload``: ``kinds`` are the workload kinds allowed (empty: any) and
    ``refused`` the message for another (``{text}`` and ``{kind}`` filled in). ``requires``
    names an argument this one needs (``requires_why``: the message when it is missing); the
    usage line shows the two together.
    """

    name: str
    type: ArgType = ArgType.TEXT
    flags: tuple[str, ...] = ()
    help: str = ""
    metavar: str | None = None
    required: bool = True
    low: int | None = None
    high: int | None = None
    noun: str | None = None
    below: str | None = None
    kinds: tuple[WorkloadKind, ...] = ()
    refused: str | None = None
    requires: str | None = None
    requires_why: str | None = None

    @property
    def positional(self) -> bool:
        """True for a positional argument (no ``flags``)."""
        return not self.flags

    def convert(self, text: str) -> Any:
        """The value of ``text`` for this argument. Raises ``ValueError`` with a message for the
        person who typed it."""
        if self.type is ArgType.INTEGER:
            return self._integer(text)
        if self.type is ArgType.DURATION:
            return parse_duration(text)
        if self.type is ArgType.WORKLOAD:
            return self._workload(text)
        if self.type is ArgType.WORKLOADS:
            workloads = tuple(w.strip() for w in text.split(",") if w.strip())
            for workload in workloads:
                parse_workload(workload)
            return workloads
        if self.type is ArgType.VAULT_PATH:
            return text.strip("/")
        if self.type is ArgType.PARAMETERS:
            key, sep, value = text.partition("=")
            if not sep or not _PARAMETER_KEY.match(key):
                raise ValueError(
                    f"'{text}' is not key=value (a key is letters, digits and _, not first a digit)"
                )
            return key, value
        return text

    def _integer(self, text: str) -> int:
        noun = self.noun or self.name
        low = 0 if self.low is None else self.low
        high = MAX_ID if self.high is None else self.high
        numeric = text.isascii() and text.lstrip("-").isdigit()
        if numeric and int(text) < low and self.below:
            raise ValueError(self.below)
        if not numeric:
            raise ValueError(f"'{text}' is not a {noun}")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"a {noun} must be between {low} and {high}")
        return value

    def _workload(self, text: str) -> tuple[WorkloadKind | None, str]:
        kind, name = parse_workload(text)
        if self.kinds and kind is not None and kind not in self.kinds:
            raise ValueError((self.refused or "'{text}' is a {kind}").format(text=text, kind=kind))
        return kind, name

    def usage(self) -> str:
        """How the usage line shows this argument alone (``<workload>``, ``-n <namespace>``,
        ``[--key K]``)."""
        if self.type is ArgType.PARAMETERS:
            return self.metavar or "[key=value …]"
        metavar = self.metavar or (f"<{self.name}>" if self.positional else self.name.upper())
        if self.positional:
            return metavar
        text = f"{self.flags[0]} {metavar}"
        return text if self.required else f"[{text}]"


class RuleSettings(BaseModel):
    """The settings a policy rule may give one kind: each field is a key of the rule
    (``limits``, ``rotate``, ``max_duration`` …), validated with the policy file (its errors
    name the rule's field and line).

    A kind's subclass adds :meth:`problems` for what its fields' types cannot say alone, and
    :meth:`as_settings` for the JSON the kind reads back from ``Target.settings``.
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", frozen=True)

    def problems(self) -> list[tuple[Loc, str]]:
        """What is wrong across fields: ``(where in the rule, message)`` pairs; none here."""
        return []

    def as_settings(self, *, applies: bool) -> dict[str, Any]:
        """The JSON of these settings for ``Target.settings`` (``applies``: the rule decides
        this kind, so defaults that only make sense for it may be filled in)."""
        return self.model_dump(mode="json")

    # The hooks below serve a kind's top-level settings (``KindSpec.policy_settings``), which
    # may name environments and declare, item by item, what cannot be undone (runbooks).

    def environments_named(self) -> list[tuple[Loc, Sequence[str]]]:
        """The environment names these settings refer to, each list with where it is
        (``(("runbooks", "vacuum", "environments"), ["prod"])``): the policy loader reports any
        that is not one of the policy's environments. None here."""
        return []

    def irreversible(self, environments: Collection[str] | None) -> list[str]:
        """What these settings let a request of the kind do in one of ``environments`` (a
        rule's ``match.environment``; None: any) that cannot be undone, each named for the
        loader's message (``runbook vacuum``): an ``approval: auto`` rule deciding the kind then
        needs ``allow_irreversible_auto``. None here."""
        return []

    def warnings(self, decided_in: Callable[[Collection[str]], bool]) -> list[tuple[Loc, str]]:
        """What is valid but surely not meant (``opsgate policy check``), as ``(where,
        message)`` pairs; ``decided_in(environments)`` tells whether a rule that does not deny
        decides the kind in one of ``environments``. None here."""
        return []


@dataclass(frozen=True)
class Backends:
    """What building a kind may use: the Kubernetes adapter, the Vault adapter (None: not
    configured), the clock (aware UTC), how rollouts are followed (seconds), and how a
    secret's consumers are restarted and checked (``actions.rotate`` callables)."""

    kube: KubernetesPort
    clock: Callable[[], datetime]
    vault: VaultPort | None = None
    rollout_timeout: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    poll_interval: float = 2.0
    restart_consumer: Callable[[str, str, str | None], str] | None = None
    check_consumer: Callable[[str, str, str | None], str] | None = None

    def adapter(self, port: Callable[..., P]) -> P | None:
        """The adapter (``kube``, then ``vault``) that implements ``port``, a
        ``typing.runtime_checkable`` Protocol a kind declares in its own module for what it
        needs beyond :class:`actions.kube.KubernetesPort` and :class:`actions.vault.VaultPort`
        (e.g. Jobs and pod logs); None when neither does (the kind is then not built)."""
        for candidate in (self.kube, self.vault):
            if candidate is not None and isinstance(candidate, port):  # type: ignore[arg-type]
                return cast(P, candidate)
        return None


class Follower(Protocol):
    """Reads once something a request of a kind left to follow (a ``RolloutWatch`` of the
    kind's ``KindSpec.follows``, e.g. a ``Job``), for the gate's periodic job."""

    def check(self, watch: Any, *, elapsed: float, timeout: float) -> RolloutResult | None:
        """Its result once it has ended or ``elapsed`` reached ``timeout`` (seconds); None
        while it runs. Raises ``actions.errors.ActionError``."""
        ...


@dataclass(frozen=True)
class Catalogue:
    """A listing a kind answers at once, without a request: ``/ops <word>`` (``/ops
    runbooks``), ``summary`` its line in ``/ops help``. ``lines(settings, namespaces_of,
    may_ask)`` makes the answer (Slack mrkdwn lines, which the caller escapes) from the policy's
    top-level settings for the kind (None: none), each environment's namespace globs, and
    ``may_ask(environment, namespace glob)``: whether a rule lets the caller ask for the kind
    there."""

    word: str
    summary: str
    lines: Callable[
        [RuleSettings | None, Mapping[str, Sequence[str]], Callable[[str, str], bool]], list[str]
    ]


@dataclass(frozen=True)
class Undo:
    """The request that puts back what a request changed: the ``kind`` (command word) and its
    ``params`` (``/ops restore <path> --to-version N`` after a rotation)."""

    kind: str
    params: BaseModel


@dataclass(frozen=True)
class KindSpec:
    """One request kind, declared in one place.

    ``name`` is the command word (``/ops <name>``) and what policy rules name in
    ``match.action``; ``summary`` is its line in ``/ops help``; ``grammar`` its arguments in
    order (the usage line follows that order); ``params_model`` the pydantic model the arguments
    fill; ``scope`` what it acts on; ``reversible`` whether its change can be undone (``approval:
    auto`` on an irreversible kind needs ``allow_irreversible_auto``); ``rule_settings`` the
    settings a rule may give it (None: none); ``policy_settings`` top-level keys it adds to the
    policy file (None: none); ``decided_with`` another kind whose rules decide this one too
    (``restore`` is decided by a rule naming ``rotate``); ``command`` the ``/ops`` word when it
    is not ``name``; ``build`` makes the kind from the
    backends (None: it cannot run with them, e.g. no Vault); ``undo``, where the kind has one,
    gives from a request's params and its preview's facts the request that puts back what it
    changes (None: that one cannot be undone by a request, e.g. a static role's password).
    ``reversible_for(params, policy settings, environment)``, for a kind whose requests differ,
    tells whether one request can be undone (a runbook says so itself), ``reversible`` being
    then the most a request of the kind can be;
    ``follows`` is the ``RolloutWatch.kind`` the kind's ``Outcome`` leaves to follow when it is
    not a workload's rollout (``Job``), read by ``follower(backends)`` (None: the backends lack
    what it needs); ``catalogue`` a listing command of the kind (``/ops runbooks``); ``example``
    a whole ``/ops`` command that ``/ops help <word>`` shows; ``cluster_rules`` the RBAC rules
    (``rbac.authorization.k8s.io/v1`` PolicyRule dicts) the kind needs beyond the common ones,
    which ``opsgate rbac`` adds only for a policy that lets some rule decide the kind and, for a
    kind with top-level settings, declares some (the runbooks' Job rules).
    """

    name: str
    summary: str
    grammar: tuple[Arg, ...]
    params_model: type[BaseModel]
    scope: Scope
    reversible: bool
    build: Callable[[Backends], ActionKind | None]
    rule_settings: type[RuleSettings] | None = None
    policy_settings: type[RuleSettings] | None = None
    decided_with: str | None = None
    undo: Callable[[BaseModel, Mapping[str, Any]], Undo | None] | None = None
    command: str | None = None
    reversible_for: Callable[[BaseModel, RuleSettings | None, str | None], bool] | None = None
    follows: str | None = None
    follower: Callable[[Backends], Follower | None] | None = None
    catalogue: Catalogue | None = None
    example: str = ""
    cluster_rules: tuple[Mapping[str, Any], ...] = ()

    def request_reversible(
        self, params: BaseModel, settings: RuleSettings | None, environment: str | None
    ) -> bool:
        """Whether the request of ``params`` in ``environment`` can be undone, ``settings``
        being the policy's top-level settings for the kind: ``reversible``, and
        ``reversible_for`` when given."""
        if self.reversible_for is None:
            return self.reversible
        return self.reversible and self.reversible_for(params, settings, environment)

    @property
    def word(self) -> str:
        """The ``/ops`` command word: ``command``, else ``name`` (``/ops run`` for a kind the
        policy names ``runbook``)."""
        return self.command or self.name

    def command_line(self, params: BaseModel) -> str:
        """``params`` as the ``/ops`` command that asks for them (``/ops scale deployment/api 3
        -n payments``), the inverse of parsing it: arguments in the grammar's order, an option
        left out when its value is None or empty."""
        values = params.model_dump()
        words = [f"/ops {self.word}"]
        for arg in self.grammar:
            if arg.type is ArgType.PARAMETERS:
                pairs = values.get(arg.name) or {}
                words += [shlex.quote(f"{key}={value}") for key, value in pairs.items()]
                continue
            if arg.type is ArgType.WORKLOAD:
                kind = values.get("kind")
                value: Any = f"{str(kind).lower()}/{values['name']}" if kind else values["name"]
            else:
                value = values.get(arg.name)
            if value is None or value == () or value == []:
                continue
            if arg.type is ArgType.WORKLOADS:
                value = ",".join(value)
            elif arg.type is ArgType.DURATION:
                value = format_duration(value)
            text = shlex.quote(str(value))
            words.append(text if arg.positional else f"{arg.flags[0]} {text}")
        return " ".join(words)

    def usage(self, options: str) -> str:
        """``/ops <name> <args…> <options>``: the args in order, an argument another requires
        shown with it (``[--restart w1,w2 -n <namespace>]``)."""
        required_by = {a.requires: a for a in self.grammar if a.requires}
        parts: list[str] = []
        for arg in self.grammar:
            if arg.name in required_by and not arg.required:
                continue
            if arg.requires:
                other = next(a for a in self.grammar if a.name == arg.requires)
                inner = f"{arg.flags[0]} {arg.metavar} {other.flags[0]} {other.metavar}"
                parts.append(inner if arg.required else f"[{inner}]")
                continue
            parts.append(arg.usage())
        return " ".join([f"/ops {self.word}", *parts, options])

    def scope_of(self, params: BaseModel) -> tuple[str | None, str | None]:
        """``(namespace, path)`` of a request's ``params``: what the gate resolves the
        environment from and rules match on. ``namespace``: the params' ``namespace`` (for a
        Vault path, the namespace of the workloads it touches, if any; none for the cluster);
        ``path``: the params' ``path`` for a Vault path, else None."""
        namespace = None if self.scope is Scope.CLUSTER else getattr(params, "namespace", None)
        path = getattr(params, "path", None) if self.scope is Scope.VAULT_PATH else None
        return namespace, path

    def params(self, values: Mapping[str, Any]) -> BaseModel:
        """The params model filled from the arguments' converted ``values`` (None: not given,
        the model's default applies). Raises ``ValueError`` (pydantic's ``ValidationError`` is
        one) when they do not fit, and for an argument given without the one it requires."""
        fields: dict[str, Any] = {}
        for arg in self.grammar:
            value = values.get(arg.name)
            if value is None:
                continue
            if arg.requires and value and values.get(arg.requires) is None:
                raise ValueError(arg.requires_why or f"{arg.flags[0]} needs {arg.requires}")
            if arg.type is ArgType.WORKLOAD:
                kind, fields["name"] = value
                if "kind" in self.params_model.model_fields:
                    fields["kind"] = kind
                continue
            if arg.type is ArgType.PARAMETERS:
                fields[arg.name] = _pairs(value)
                continue
            fields[arg.name] = value
        return self.params_model.model_validate(fields)


def _pairs(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """``key=value`` pairs as a dict; ValueError for a key given twice."""
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"{key} is given twice")
        out[key] = value
    return out
