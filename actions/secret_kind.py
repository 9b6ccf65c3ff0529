"""What ``rotate`` and ``restore`` (:mod:`actions.rotate`, :mod:`actions.restore`) share: the
rule's ``rotate`` settings (defined once, here, and validated with the policy through
:data:`actions.rotate.KIND`), how a Vault path is split into its mount and the path inside it,
check-and-set KV writes, and the restart of a secret's consumers (the workloads that read it).

Secret values never leave :class:`actions.vault.VaultPort`'s adapter except for a generated value
on its way into the write: they are never logged, put in a Preview, an Outcome or an error.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from actions.base import Outcome, Target
from actions.errors import ActionError, Conflict, Invalid, NotFound, PermanentError
from actions.spec import Loc, RuleSettings, StrList
from actions.vault import Mount, VaultPort

RestartConsumer = Callable[[str, str, str | None], str]
"""``(namespace, workload_ref, kube_context) -> one-line summary`` of a restart followed to the
end of its rollout (``"deployment/payments-api: rolled out 3/3 in 2 s"``); raises
:class:`actions.errors.ActionError` when the workload does not come back."""


ConsumerCheck = Callable[[str, str, str | None], str]
"""``(namespace, workload_ref, kube_context) -> the resolved reference``
(``"payments-api"`` -> ``"deployment/payments-api"``), read without changing anything; raises
:class:`actions.errors.NotFound` when there is no such workload and
:class:`actions.errors.Invalid` when it cannot be restarted (an ambiguous name, an unknown kind, a
paused Deployment)."""


def no_consumer_check(namespace: str, workload: str, kube_context: str | None) -> str:
    """The check used when none is injected: every reference is taken as it is written."""
    return workload


DEFAULT_LENGTH = 32

PATH_PATTERN = r"^[A-Za-z0-9_.@+=:,\-]+(/[A-Za-z0-9_.@+=:,\-]+)+/?$"
"""A Vault path: mount and at least one more segment, no whitespace, no empty or odd segment."""


NAMED_CHARSETS: Mapping[str, str] = {
    "alphanumeric": string.ascii_letters + string.digits,
    "ascii": string.ascii_letters + string.digits + string.punctuation,
}
"""The charsets a rule's generator may name (:class:`Generator`): ``ascii`` is printable
ASCII without the space."""


MIN_LENGTH, MAX_LENGTH = 16, 256
"""The bounds of a generated value's length (see :class:`Generator`)."""

MIN_DISTINCT = 10
"""The fewest distinct characters a rule's literal ``charset`` may have."""


class Generator(BaseModel):
    """A generated value: ``length`` characters (16 to 256) drawn from ``charset``: a name of
    :data:`NAMED_CHARSETS` (``alphanumeric``, ``ascii``), else its literal characters.

    16 characters is the least a policy may ask for: 16 alphanumerics are about 95 bits, while
    8 (about 48 bits) can be guessed offline; 256 is more than any secret needs, and longer
    values break consumers that bound a password's length. A policy rule's literal charset must
    also have at least :data:`MIN_DISTINCT` distinct characters (:meth:`problems`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    length: int = Field(default=DEFAULT_LENGTH, ge=MIN_LENGTH, le=MAX_LENGTH)
    charset: str = Field(default="alphanumeric", min_length=2)

    def characters(self) -> str:
        """The distinct characters drawn from, in their first order."""
        return "".join(dict.fromkeys(NAMED_CHARSETS.get(self.charset, self.charset)))

    def problems(self) -> list[tuple[Loc, str]]:
        """A charset that is neither a name nor at least :data:`MIN_DISTINCT` characters."""
        if self.charset in NAMED_CHARSETS or len(self.characters()) >= MIN_DISTINCT:
            return []
        return [
            (
                ("charset",),
                f"charset is {' or '.join(repr(n) for n in NAMED_CHARSETS)} or a string of at "
                f"least {MIN_DISTINCT} distinct characters",
            )
        ]


class RotateSettings(BaseModel):
    """A rule's ``rotate`` settings: a Vault ``password_policy`` or a ``generator`` (not both;
    neither: 32 alphanumerics), the KV ``key`` rotated when ``--key`` is not given, the
    workloads to ``restart`` afterwards (``restore`` restarts them too), in ``namespace``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    password_policy: str | None = Field(default=None, min_length=1)
    generator: Generator | None = None
    key: str | None = Field(default=None, min_length=1)
    restart: StrList = []
    namespace: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exclusive(self) -> RotateSettings:
        if self.password_policy is not None and self.generator is not None:
            raise ValueError("give either password_policy or generator, not both")
        return self

    @classmethod
    def of(cls, target: Target) -> RotateSettings:
        """The settings in ``target.settings["rotate"]`` (none: the defaults). Raises Invalid
        when they are not valid (a request decided under a policy that no longer is)."""
        raw = target.settings.get("rotate") if target.settings else None
        try:
            return cls.model_validate(raw or {})
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise Invalid(
                f"the policy rule's rotate settings are invalid ({fields}); fix policy.yml"
            ) from exc


class RotateRuleSettings(RuleSettings):
    """A rule's settings for ``rotate`` (and ``restore``): its ``rotate`` key."""

    rotate: RotateSettings | None = None

    def problems(self) -> list[tuple[Loc, str]]:
        """The generator's charset, when it is too small (see :meth:`Generator.problems`)."""
        if self.rotate is None or self.rotate.generator is None:
            return []
        return [
            (("rotate", "generator", *loc), message)
            for loc, message in self.rotate.generator.problems()
        ]

    def as_settings(self, *, applies: bool) -> dict[str, Any]:
        """``{"rotate": the settings as JSON, or None}``."""
        return {"rotate": self.rotate.model_dump(mode="json") if self.rotate else None}


def generated_value(generator: Generator) -> str:
    """``generator.length`` characters, each a :func:`secrets.choice` of its charset."""
    charset = generator.characters()  # each character once: a uniform draw
    return "".join(secrets.choice(charset) for _ in range(generator.length))


def split_path(vault: VaultPort, full_path: str) -> tuple[Mount, str, str]:
    """(mount, mount name without slash, path inside the mount)."""
    clean = full_path.strip("/")
    mount = vault.mount_of(clean)
    inside = clean[len(mount.path) :].strip("/") if clean.startswith(mount.path) else ""
    if not inside:
        raise Invalid(
            f"{clean} names the secrets engine mounted at {mount.path}, not a secret in it"
        )
    return mount, mount.path.strip("/"), inside


def require_kv2(mount: Mount, full_path: str, what: str) -> None:
    if mount.type in ("kv", "generic") and mount.kv_version == 2:
        return
    if mount.type in ("kv", "generic"):
        raise Invalid(
            f"{full_path} is in a KV version {mount.kv_version} engine ({mount.path}); opsgate "
            f"can {what} KV version 2 secrets only (they keep versions and allow check-and-set)"
        )
    raise Invalid(
        f"{full_path} is in a '{mount.type}' secrets engine ({mount.path}); opsgate can {what} "
        "KV version 2 secrets and database static roles (database/static-roles/<role>)"
    )


def age(then: datetime | None, now: datetime) -> str:
    """``"3 d 4 h ago"``, ``"12 min ago"``, ``"never"``."""
    if then is None:
        return "never"
    seconds = max(0, int((now - then).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h ago"
    if hours:
        return f"{hours} h {minutes} min ago"
    if minutes:
        return f"{minutes} min ago"
    return f"{seconds} s ago"


def stamp(when: datetime | None) -> str:
    if when is None:
        return "never"
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _current_version(vault: VaultPort, mount: str, inside: str) -> int | None:
    """The current version now, for a conflict message; None if it cannot be read."""
    try:
        return vault.kv_metadata(mount, inside).current_version
    except ActionError:
        return None


def write_kv(
    vault: VaultPort,
    facts: Mapping[str, Any],
    *,
    base_version: int,
    gone: str,
    new_values: Mapping[str, Callable[[], str]] | None = None,
) -> int:
    """:meth:`VaultPort.kv_write_from_version` of the previewed secret (``facts``), with
    check-and-set on the version read at preview; returns the new version.

    Raises Conflict, nothing written, when the secret changed since the preview, or, with the
    message ``gone``, when ``base_version`` can no longer be read.
    """
    mount, inside, path = facts["mount"], facts["secret_path"], facts["path"]
    read_version: int = facts["version"]
    try:
        return vault.kv_write_from_version(
            mount, inside, base_version=base_version, cas=read_version, new_values=new_values
        )
    except Conflict as exc:
        raise _conflict(path, read_version, _current_version(vault, mount, inside)) from exc
    except NotFound as exc:
        raise Conflict(gone) from exc


def no_password_policy(policy: str) -> str:
    return (
        f"Vault has no password policy named '{policy}' (the rule's rotate.password_policy); "
        "nothing was written; fix policy.yml or create the password policy in Vault"
    )


def _conflict(full_path: str, read: int, now: int | None) -> Conflict:
    later = f"is now {now}" if now is not None else "is no longer current"
    return Conflict(
        f"{full_path} changed since the preview (version {read} {later}); nothing was "
        "written; ask again"
    )


class _Consumers:
    """Restart the workloads that read a secret, one by one, and report each."""

    def __init__(self, restart_consumer: RestartConsumer, check_consumer: ConsumerCheck) -> None:
        self._restart = restart_consumer
        self._check = check_consumer

    def resolve(
        self, workloads: list[str], namespace: str | None, context: str | None
    ) -> list[str]:
        """Each workload as ``check_consumer`` resolves it (each once, in order).

        Every workload is checked; when any fails, one error names each failure: NotFound when
        all of them are missing, else Invalid. Other errors (Forbidden, TemporaryError) of the
        check propagate as they are.
        """
        resolved: list[str] = []
        failures: list[ActionError] = []
        for workload in workloads:
            assert namespace is not None
            try:
                resolved.append(self._check(namespace, workload, context))
            except (NotFound, Invalid) as exc:
                failures.append(exc)
        if failures:
            kind = NotFound if all(isinstance(f, NotFound) for f in failures) else Invalid
            reasons = "; ".join(str(f) for f in failures)
            raise kind(
                f"cannot restart the secret's consumers afterwards: {reasons}. Nothing was "
                "written; fix --restart (or the rule's rotate.restart) and ask again"
            ) from failures[0]
        return list(dict.fromkeys(resolved))

    def plan(
        self,
        params_restart: tuple[str, ...],
        params_namespace: str | None,
        settings: RotateSettings,
        target: Target,
    ) -> tuple[list[str], str | None]:
        """The rule's workloads then the command's (each once), as :meth:`resolve` resolves
        them, and their namespace."""
        workloads = list(dict.fromkeys([*settings.restart, *params_restart]))
        namespace = params_namespace or settings.namespace or target.namespace
        if workloads and not namespace:
            raise Invalid(
                "workloads to restart need a namespace: add -n <namespace> "
                "(or a namespace in the rule's rotate settings)"
            )
        return self.resolve(workloads, namespace, target.kube_context), namespace

    def finish(
        self,
        written: str,
        facts: Mapping[str, Any],
        context: str | None,
        *,
        way_back: str,
        outcome_facts: dict[str, Any],
    ) -> Outcome:
        """After ``written`` was done: restart the previewed consumers (``facts["restart"]`` in
        ``facts["namespace"]``) and return the Outcome (``outcome_facts`` plus ``consumers``).

        Raises :func:`_consumers_failed`'s PermanentError (with ``way_back``) when any failed.
        """
        results = self.restart_all(facts["restart"], facts["namespace"], context)
        if not all(r["ok"] for r in results):
            raise _consumers_failed(written, results, facts["namespace"], way_back)
        return Outcome(
            summary=_done(written, results), facts={**outcome_facts, "consumers": results}
        )

    def restart_all(
        self, workloads: list[str], namespace: str | None, context: str | None
    ) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for workload in workloads:
            assert namespace is not None
            try:
                summary = self._restart(namespace, workload, context)
                results.append({"workload": workload, "ok": True, "summary": summary})
            except ActionError as exc:
                results.append({"workload": workload, "ok": False, "error": str(exc)})
        return results


def _consumer_lines(results: list[dict[str, Any]]) -> str:
    """One bullet line per workload restarted, the failed ones first."""
    ordered = [r for r in results if not r["ok"]] + [r for r in results if r["ok"]]
    return "\n".join(
        f"• {r['workload']}: FAILED: {r['error']}" if not r["ok"] else f"• {r['summary']}"
        for r in ordered
    )


def _done(written: str, results: list[dict[str, Any]]) -> str:
    """The summary of a success: what was written, then one line per workload restarted."""
    return written + (f"\n{_consumer_lines(results)}" if results else "")


def _consumers_failed(
    written: str, results: list[dict[str, Any]], namespace: str | None, way_back: str
) -> PermanentError:
    """The error of a write that succeeded while a workload restart failed: what was written,
    what to do (``way_back``, then the restart commands to retry), then each workload. What to do
    comes before the details, so that a message cut short still says it."""
    failed = [r for r in results if not r["ok"]]
    retry = ", ".join(f"`/ops restart {r['workload']} -n {namespace}`" for r in failed)
    return PermanentError(
        f"{written}, but {len(failed)} of {len(results)} workload restart(s) failed.\n"
        f"{way_back}\n"
        f"To restart a failed workload again: {retry}\n"
        f"{_consumer_lines(results)}"
    )


def restart_line(workloads: list[str], namespace: str | None) -> str:
    if not workloads:
        return "No workloads will be restarted"
    return f"Then restart, one by one, in namespace *{namespace}*: {', '.join(workloads)}"


def in_environment(environment: str) -> str:
    return f", environment {environment}" if environment else ""


class SecretKind:
    """What rotate and restore share: ``vault`` is the Vault adapter; ``restart_consumer``
    restarts one workload and follows its rollout; ``check_consumer`` resolves one in the
    preview (default: no check); ``clock`` returns an aware datetime (for the age of versions).
    """

    def __init__(
        self,
        *,
        vault: VaultPort,
        restart_consumer: RestartConsumer,
        clock: Callable[[], datetime],
        check_consumer: ConsumerCheck = no_consumer_check,
    ) -> None:
        self._vault = vault
        self._consumers = _Consumers(restart_consumer, check_consumer)
        self._clock = clock
