"""``rotate`` and ``restore``: Vault secret rotation, and going back to an earlier KV version.

``/ops rotate <path>`` acts on one of two kinds of path, told apart by the secrets engine mounted
there (the longest mount prefix, as Vault itself resolves a path):

* a KV v2 secret (``secret/prod/payments/db``): one key gets a new value, written as a new version
  with check-and-set against the version read for the preview, so a concurrent writer makes the
  rotation fail cleanly (``Conflict``) instead of being overwritten; the other keys are copied from
  that same version. The value comes from the rule's Vault password policy
  (``sys/policies/password/<name>/generate``), else from the rule's generator (``length``
  characters drawn with :func:`secrets.choice` from ``charset``: ``alphanumeric``, ``ascii``, or
  the literal characters allowed),
  else from the default generator: 32 characters from ASCII letters and digits.
* a static role of the database secrets engine (``database/static-roles/<role>``): Vault sets a new
  password in the database itself (``<mount>/rotate-role/<role>``).

Then the workloads that read the secret (the rule's ``restart`` list, plus ``--restart``) are
restarted one by one through the injected ``restart_consumer``; every one is tried and reported.
The preview first checks, through the injected ``check_consumer``, that each of them exists (and
can be restarted), so a typo is refused before anyone is asked and before anything is written;
the preview then names the workloads as resolved (``deployment/payments-api``).

``/ops restore <path> --to-version N`` writes version N's data as a new version (check-and-set
against the current version); no version is ever deleted or destroyed.

Secret values never leave :class:`actions.vault.VaultPort`'s adapter except for a generated value
on its way into the write: they are never logged, put in a Preview, an Outcome or an error, and the
references are dropped as soon as the write returns (Python cannot wipe a ``str``; ``del`` is the
most it allows).

Rule settings (``Target.settings["rotate"]``, all optional)::

    {"password_policy": "opsgate-db",            # or
     "generator": {"length": 40, "charset": "abc…"},
     "key": "password",                           # the key rotated when --key is not given
     "restart": ["deployment/payments-api", "payments-worker"],
     "namespace": "payments"}
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actions.base import Outcome, Preview, Target
from actions.errors import ActionError, Conflict, Invalid, NotFound, PermanentError
from actions.vault import KvMetadata, KvVersion, Mount, VaultPort

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


DEFAULT_CHARSET = string.ascii_letters + string.digits
DEFAULT_LENGTH = 32

PATH_PATTERN = r"^[A-Za-z0-9_.@+=:,\-]+(/[A-Za-z0-9_.@+=:,\-]+)+/?$"
"""A Vault path: mount and at least one more segment, no whitespace, no empty or odd segment."""


class RotateParams(BaseModel):
    """``/ops rotate <path> [--key K] [--restart w1,w2 -n <namespace>]``.

    ``path`` as Vault spells it (``secret/prod/payments/db``, ``database/static-roles/app``);
    ``restart`` holds workload references (``deployment/payments-api`` or a bare name).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(min_length=3, max_length=512, pattern=PATH_PATTERN)
    key: str | None = Field(default=None, min_length=1, max_length=256)
    restart: tuple[str, ...] = ()
    namespace: str | None = Field(default=None, min_length=1, max_length=63)


class RestoreParams(BaseModel):
    """``/ops restore <path> --to-version N`` for a KV v2 secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(min_length=3, max_length=512, pattern=PATH_PATTERN)
    to_version: int = Field(ge=1)


NAMED_CHARSETS: Mapping[str, str] = {
    "alphanumeric": string.ascii_letters + string.digits,
    "ascii": string.ascii_letters + string.digits + string.punctuation,
}
"""The charsets a policy rule may name (``approvals.policy.Generator``): ``ascii`` is printable
ASCII without the space."""


class Generator(BaseModel):
    """A generated value: ``length`` characters drawn from ``charset``: a name of
    :data:`NAMED_CHARSETS` (``alphanumeric``, ``ascii``), else its literal characters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    length: int = Field(default=DEFAULT_LENGTH, ge=8, le=4096)
    charset: str = Field(default=DEFAULT_CHARSET, min_length=2)

    def characters(self) -> str:
        """The distinct characters drawn from, in their first order."""
        return "".join(dict.fromkeys(NAMED_CHARSETS.get(self.charset, self.charset)))


class RotateSettings(BaseModel):
    """The rule's ``rotate`` settings (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    password_policy: str | None = Field(default=None, min_length=1)
    generator: Generator | None = None
    key: str | None = Field(default=None, min_length=1)
    restart: tuple[str, ...] = ()
    namespace: str | None = Field(default=None, min_length=1)

    @classmethod
    def of(cls, target: Target) -> RotateSettings:
        raw = target.settings.get("rotate") if target.settings else None
        try:
            return cls.model_validate(raw or {})
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise Invalid(
                f"the policy rule's rotate settings are invalid ({fields}); fix policy.yml"
            ) from exc


def generated_value(generator: Generator) -> str:
    """``generator.length`` characters, each a :func:`secrets.choice` of its charset."""
    charset = generator.characters()  # each character once: a uniform draw
    return "".join(secrets.choice(charset) for _ in range(generator.length))


def _split(vault: VaultPort, full_path: str) -> tuple[Mount, str, str]:
    """(mount, mount name without slash, path inside the mount)."""
    clean = full_path.strip("/")
    mount = vault.mount_of(clean)
    inside = clean[len(mount.path) :].strip("/") if clean.startswith(mount.path) else ""
    if not inside:
        raise Invalid(
            f"{clean} names the secrets engine mounted at {mount.path}, not a secret in it"
        )
    return mount, mount.path.strip("/"), inside


def _require_kv2(mount: Mount, full_path: str, what: str) -> None:
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


def _age(then: datetime | None, now: datetime) -> str:
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


def _stamp(when: datetime | None) -> str:
    if when is None:
        return "never"
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _current_version(vault: VaultPort, mount: str, inside: str) -> int | None:
    """The current version now, for a conflict message; None if it cannot be read."""
    try:
        return vault.kv_metadata(mount, inside).current_version
    except ActionError:
        return None


def _write_kv(
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


def _no_password_policy(policy: str) -> str:
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


def _restart_line(workloads: list[str], namespace: str | None) -> str:
    if not workloads:
        return "No workloads will be restarted"
    return f"Then restart, one by one, in namespace *{namespace}*: {', '.join(workloads)}"


def _in_environment(environment: str) -> str:
    return f", environment {environment}" if environment else ""


class _SecretKind:
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


class Rotate(_SecretKind):
    """The rotate request kind (see the module docstring); constructed as :class:`_SecretKind`."""

    name: ClassVar[str] = "rotate"
    # a database static role's old password is gone for good; a KV version can be restored,
    # but consumers may already have used the new value: never approved automatically
    reversible: ClassVar[bool] = False
    params_model: ClassVar[type[BaseModel]] = RotateParams

    # -- preview ------------------------------------------------------------------------------

    def preview(self, params: BaseModel, *, target: Target) -> Preview:
        """Read the secret's metadata and key names (or the static role) and say what will happen.

        Raises NotFound (no such secret or role, or a workload to restart that does not
        exist), Invalid (not KV v2 nor a static role, an ambiguous or unknown key, workloads
        without a namespace or that cannot be restarted, a deleted current version, a rule's
        password policy that Vault does not have), Forbidden
        and TemporaryError from the adapters.
        """
        assert isinstance(params, RotateParams)
        settings = RotateSettings.of(target)
        workloads, namespace = self._consumers.plan(
            params.restart, params.namespace, settings, target
        )
        full_path = params.path.strip("/")
        mount, mount_name, inside = _split(self._vault, full_path)
        if mount.type == "database":
            return self._preview_static_role(
                params, full_path, mount, mount_name, inside, workloads, namespace
            )
        _require_kv2(mount, full_path, "rotate")
        now = self._clock()
        meta = self._vault.kv_metadata(mount_name, inside)
        version = meta.current_version
        current = meta.versions.get(version)
        if current is None or current.deleted or current.destroyed:
            raise Invalid(
                f"the current version ({version}) of {full_path} is deleted or destroyed; "
                "restore a version first (`/ops restore "
                f"{full_path} --to-version N`)"
            )
        keys = self._vault.kv_keys(mount_name, inside, version)
        key = params.key or settings.key
        if key is None:
            if len(keys) != 1:
                raise Invalid(
                    f"{full_path} has {len(keys)} keys ({', '.join(keys) or 'none'}); "
                    "say which one gets a new value with --key"
                )
            key = keys[0]
        elif key not in keys:
            raise Invalid(f"{full_path} has no key '{key}' (its keys: {', '.join(keys)})")
        if settings.password_policy:
            self._check_password_policy(settings.password_policy)
            source = f"Vault password policy `{settings.password_policy}`"
            source_fact: dict[str, Any] = {"password_policy": settings.password_policy}
        else:
            generator = settings.generator or Generator()
            distinct = len(generator.characters())
            default = "" if settings.generator else " (the default generator)"
            source = (
                f"{generator.length} random characters from a {distinct}-character set{default}"
            )
            source_fact = {"generator": {"length": generator.length, "charset_size": distinct}}
        lines = (
            f"Rotate *{full_path}* (KV v2 secret in {mount.path}"
            f"{_in_environment(target.environment)})",
            f"Keys: {', '.join(keys)}",
            f"Current version: {version}, created {_stamp(current.created_time)} "
            f"({_age(current.created_time, now)})",
            f"New value for key *{key}*: {source}; the other keys are kept; "
            f"written as version {version + 1} with check-and-set on version {version}",
            _restart_line(workloads, namespace),
        )
        facts: dict[str, Any] = {
            "kind": "kv",
            "path": full_path,
            "mount": mount_name,
            "secret_path": inside,
            "version": version,
            "keys": list(keys),
            "key": key,
            "source": source_fact,
            "restart": workloads,
            "namespace": namespace,
        }
        return Preview(target=full_path, lines=lines, facts=facts)

    def _check_password_policy(self, policy: str) -> None:
        """Refuse, before anyone is asked, a rule whose password policy Vault does not have.

        Vault has no way to ask whether a password policy exists short of reading it (a
        capability opsgate's token does not need), so one password is generated and dropped at
        once: it is never written anywhere.
        """
        try:
            password = self._vault.generate_password(policy)
        except NotFound as exc:
            raise Invalid(_no_password_policy(policy)) from exc
        del password

    def _preview_static_role(
        self,
        params: RotateParams,
        full_path: str,
        mount: Mount,
        mount_name: str,
        inside: str,
        workloads: list[str],
        namespace: str | None,
    ) -> Preview:
        parts = inside.split("/")
        if len(parts) != 2 or parts[0] != "static-roles":
            raise Invalid(
                f"{full_path} is in the database secrets engine at {mount.path}; "
                f"name a static role: {mount_name}/static-roles/<role>"
            )
        if params.key:
            raise Invalid("--key applies to KV secrets; a database static role has one password")
        role = self._vault.static_role(mount_name, parts[1])
        now = self._clock()
        period = f"every {role.rotation_period} s" if role.rotation_period else "none"
        lines = (
            f"Rotate the password of database static role *{role.name}* "
            f"(database user `{role.username}`, engine {mount.path}): Vault sets a new password "
            "in the database; the old one stops working",
            f"Last rotated by Vault: {_stamp(role.last_vault_rotation)} "
            f"({_age(role.last_vault_rotation, now)}); automatic rotation: {period}",
            _restart_line(workloads, namespace),
        )
        facts: dict[str, Any] = {
            "kind": "database_static_role",
            "path": full_path,
            "mount": mount_name,
            "role": role.name,
            "username": role.username,
            "last_vault_rotation": (
                role.last_vault_rotation.isoformat() if role.last_vault_rotation else None
            ),
            "restart": workloads,
            "namespace": namespace,
        }
        return Preview(target=full_path, lines=lines, facts=facts)

    # -- execute ------------------------------------------------------------------------------

    def execute(self, params: BaseModel, *, target: Target, preview: Preview) -> Outcome:
        """Write the new value (or rotate the static role), then restart the consumers.

        Raises Conflict when the secret changed since the preview (nothing written), Invalid
        when the rule's password policy no longer exists (nothing written), and PermanentError
        when the write succeeded but a consumer failed: the message names the new version, the
        ``/ops restore`` command that goes back, the ``/ops restart`` command of each failed
        workload, and then how each workload's restart went.
        """
        assert isinstance(params, RotateParams)
        facts = preview.facts
        if facts["kind"] == "database_static_role":
            return self._execute_static_role(target, facts)
        settings = RotateSettings.of(target)
        path, read_version = facts["path"], facts["version"]
        new_version = _write_kv(
            self._vault,
            facts,
            base_version=read_version,
            gone=(
                f"version {read_version} of {path} can no longer be read (deleted since the "
                "preview); nothing was written; ask again"
            ),
            new_values={facts["key"]: self._value_source(settings)},
        )
        written = (
            f"rotated key {facts['key']} of {path}: new version {new_version} (was {read_version})"
        )
        return self._consumers.finish(
            written,
            facts,
            target.kube_context,
            way_back=(
                "The new value stays in place. To go back to the old value: "
                f"`/ops restore {path} --to-version {read_version}`"
            ),
            outcome_facts={
                "path": path,
                "previous_version": read_version,
                "version": new_version,
                "keys": facts["keys"],
                "key": facts["key"],
            },
        )

    def _value_source(self, settings: RotateSettings) -> Callable[[], str]:
        """A callable the adapter calls just before the write; it keeps no value."""
        policy = settings.password_policy
        if policy:

            def from_policy() -> str:
                try:
                    return self._vault.generate_password(policy)
                except NotFound as exc:  # removed since the preview checked it
                    raise Invalid(_no_password_policy(policy)) from exc

            return from_policy
        generator = settings.generator or Generator()
        return lambda: generated_value(generator)

    def _execute_static_role(self, target: Target, facts: Mapping[str, Any]) -> Outcome:
        mount, role, path = facts["mount"], facts["role"], facts["path"]
        before = self._vault.static_role(mount, role).last_vault_rotation
        self._vault.rotate_static_role(mount, role)
        # Vault answered: the database has the new password. From here on, an error must not
        # say that nothing changed, and the workloads must be restarted whatever happens.
        try:
            after: datetime | None = self._vault.static_role(mount, role).last_vault_rotation
            unconfirmed = ""
        except ActionError as exc:
            after = None
            unconfirmed = f" (opsgate could not read the role back to confirm it: {exc})"
        if not unconfirmed and (after is None or (before is not None and after <= before)):
            raise PermanentError(
                f"Vault accepted the rotation of static role {role} but its last_vault_rotation "
                f"did not advance ({_stamp(before)}); check the database engine's logs; no "
                "workload was restarted"
            )
        when = f" at {_stamp(after)}" if after is not None else unconfirmed
        written = f"rotated the password of database static role {role} ({path}){when}"
        return self._consumers.finish(
            written,
            facts,
            target.kube_context,
            way_back=(
                "The old password no longer works and a static role has no version to restore: "
                "fix the failed workloads so that they start with the new password."
            ),
            outcome_facts={
                "path": path,
                "role": role,
                "username": facts["username"],
                "last_vault_rotation": after.isoformat() if after is not None else None,
            },
        )


class Restore(_SecretKind):
    """The restore request kind: version N's data written as a new KV v2 version.

    Same collaborators as :class:`Rotate`. After the write, the workloads in the rule's
    ``rotate.restart`` settings (if any) are restarted, as after a rotation, so they read the
    restored value.
    """

    name: ClassVar[str] = "restore"
    # writes yet another version, which consumers may use at once
    reversible: ClassVar[bool] = False
    params_model: ClassVar[type[BaseModel]] = RestoreParams

    def preview(self, params: BaseModel, *, target: Target) -> Preview:
        """Current version, target version and its age, the target's key names.

        Raises NotFound (no such secret or version, or a rule's workload to restart that does
        not exist), Invalid (a deleted or destroyed version, the current version itself, not KV
        v2, a workload that cannot be restarted).
        """
        assert isinstance(params, RestoreParams)
        settings = RotateSettings.of(target)
        workloads, namespace = self._consumers.plan((), None, settings, target)
        full_path = params.path.strip("/")
        mount, mount_name, inside = _split(self._vault, full_path)
        _require_kv2(mount, full_path, "restore")
        meta = self._vault.kv_metadata(mount_name, inside)
        wanted = self._check_version(full_path, meta, params.to_version)
        now = self._clock()
        current = meta.versions.get(meta.current_version)
        keys = self._vault.kv_keys(mount_name, inside, params.to_version)
        current_age = (
            f"created {_stamp(current.created_time)} ({_age(current.created_time, now)})"
            if current
            else "not kept"
        )
        if current is not None and not (current.deleted or current.destroyed):
            current_keys = self._vault.kv_keys(mount_name, inside, meta.current_version)
            if current_keys != keys:  # say so: a consumer may need a key the old data lacks
                current_age += f"; its keys differ: {', '.join(current_keys)}"
        lines = (
            f"Restore *{full_path}* to the data of version {params.to_version}"
            + (f" (environment {target.environment})" if target.environment else ""),
            f"Version {params.to_version}: created {_stamp(wanted.created_time)} "
            f"({_age(wanted.created_time, now)}); keys: {', '.join(keys)}",
            f"Current version: {meta.current_version}, {current_age}",
            f"Written as new version {meta.current_version + 1} with check-and-set on version "
            f"{meta.current_version}; no version is deleted",
            _restart_line(workloads, namespace),
        )
        facts: dict[str, Any] = {
            "kind": "kv",
            "path": full_path,
            "mount": mount_name,
            "secret_path": inside,
            "version": meta.current_version,
            "to_version": params.to_version,
            "keys": list(keys),
            "restart": workloads,
            "namespace": namespace,
        }
        return Preview(target=full_path, lines=lines, facts=facts)

    @staticmethod
    def _check_version(full_path: str, meta: KvMetadata, version: int) -> KvVersion:
        info = meta.versions.get(version)
        if info is None:
            kept = sorted(meta.versions)
            span = f"{kept[0]} to {kept[-1]}" if kept else "none"
            raise NotFound(f"{full_path} has no version {version} (versions kept: {span})")
        if info.destroyed:
            raise Invalid(f"version {version} of {full_path} was destroyed; it cannot be restored")
        if info.deleted:
            raise Invalid(
                f"version {version} of {full_path} was deleted; a Vault operator can undelete it "
                f"(`bao kv undelete -versions={version} {full_path}`), then ask again"
            )
        if version == meta.current_version:
            raise Invalid(f"version {version} is already the current version of {full_path}")
        return info

    def execute(self, params: BaseModel, *, target: Target, preview: Preview) -> Outcome:
        """Write version N's data as a new version (cas = the version read at preview).

        Raises Conflict when the secret changed since the preview, PermanentError when a
        consumer failed after the write.
        """
        assert isinstance(params, RestoreParams)
        facts = preview.facts
        path, read_version, to_version = facts["path"], facts["version"], facts["to_version"]
        new_version = _write_kv(
            self._vault,
            facts,
            base_version=to_version,
            gone=(
                f"version {to_version} of {path} can no longer be read (deleted or destroyed "
                "since the preview); nothing was written"
            ),
        )
        written = (
            f"restored {path} to the data of version {to_version}: new version {new_version} "
            f"(was {read_version})"
        )
        return self._consumers.finish(
            written,
            facts,
            target.kube_context,
            way_back=(
                "The restored data stays in place. To go back to the data before the restore: "
                f"`/ops restore {path} --to-version {read_version}`"
            ),
            outcome_facts={
                "path": path,
                "previous_version": read_version,
                "restored_version": to_version,
                "version": new_version,
                "keys": facts["keys"],
            },
        )
