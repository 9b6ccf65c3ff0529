"""``rotate``: Vault secret rotation (a KV v2 key, or a database static role's password).

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

Going back to an earlier KV version is the ``restore`` kind (:mod:`actions.restore`); what both
share (the rule's ``rotate`` settings, check-and-set writes, the consumers) is in
:mod:`actions.secret_kind`.

Secret values never leave :class:`actions.vault.VaultPort`'s adapter except for a generated value
on its way into the write: they are never logged, put in a Preview, an Outcome or an error, and the
references are dropped as soon as the write returns (Python cannot wipe a ``str``; ``del`` is the
most it allows).

Rule settings (``Target.settings["rotate"]``, all optional; the model is
:class:`actions.secret_kind.RotateSettings`)::

    {"password_policy": "opsgate-db",            # or
     "generator": {"length": 40, "charset": "abc…"},
     "key": "password",                           # the key rotated when --key is not given
     "restart": ["deployment/payments-api", "payments-worker"],
     "namespace": "payments"}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from actions.base import Outcome, Preview, Target
from actions.errors import ActionError, Invalid, NotFound, PermanentError
from actions.restore import RestoreParams
from actions.secret_kind import (
    PATH_PATTERN,
    Generator,
    RotateRuleSettings,
    RotateSettings,
    SecretKind,
    age,
    generated_value,
    in_environment,
    no_consumer_check,
    no_password_policy,
    require_kv2,
    restart_line,
    split_path,
    stamp,
    write_kv,
)
from actions.spec import Arg, ArgType, Backends, KindSpec, Scope, Undo
from actions.vault import Mount


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


def _build(b: Backends) -> Rotate | None:
    if b.vault is None or b.restart_consumer is None:
        return None
    check = b.check_consumer or no_consumer_check
    return Rotate(
        vault=b.vault, restart_consumer=b.restart_consumer, clock=b.clock, check_consumer=check
    )


def _undo(params: BaseModel, facts: Mapping[str, Any]) -> Undo | None:
    """A KV secret: restoring the version the preview read; a database static role's old
    password is gone: None."""
    if facts.get("kind") != "kv":
        return None
    return Undo("restore", RestoreParams(path=facts["path"], to_version=int(facts["version"])))


KIND = KindSpec(
    name="rotate",
    summary="write a new value to a Vault secret (KV v2) or rotate a database static role, "
    "then restart its consumers",
    example="/ops rotate secret/prod/payments/db --key password --restart payments-api -n payments",
    grammar=(
        Arg(
            "path",
            ArgType.VAULT_PATH,
            metavar="<secret-path>",
            help="the secret as Vault spells it (secret/prod/payments/db)",
        ),
        Arg(
            "key",
            flags=("--key",),
            metavar="K",
            required=False,
            help="the key that gets a new value (default: the rule's, or the only one)",
        ),
        Arg(
            "restart",
            ArgType.WORKLOADS,
            flags=("--restart",),
            metavar="w1,w2",
            required=False,
            help="workloads that read the secret, restarted one by one afterwards",
            requires="namespace",
            requires_why="--restart needs the workloads' namespace: add -n <namespace>",
        ),
        Arg(
            "namespace",
            flags=("-n", "--namespace"),
            metavar="<namespace>",
            required=False,
            help="the namespace of the workloads to restart",
        ),
    ),
    params_model=RotateParams,
    scope=Scope.VAULT_PATH,
    # a database static role's old password is gone for good; a KV version can be restored,
    # but consumers may already have used the new value: never approved automatically
    reversible=False,
    rule_settings=RotateRuleSettings,
    undo=_undo,
    build=_build,
)


class Rotate(SecretKind):
    """The rotate request kind (see the module docstring); constructed as :class:`SecretKind`."""

    name: ClassVar[str] = KIND.name
    reversible: ClassVar[bool] = KIND.reversible
    params_model: ClassVar[type[BaseModel]] = KIND.params_model

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
        mount, mount_name, inside = split_path(self._vault, full_path)
        if mount.type == "database":
            return self._preview_static_role(
                params, full_path, mount, mount_name, inside, workloads, namespace
            )
        require_kv2(mount, full_path, "rotate")
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
            f"{in_environment(target.environment)})",
            f"Keys: {', '.join(keys)}",
            f"Current version: {version}, created {stamp(current.created_time)} "
            f"({age(current.created_time, now)})",
            f"New value for key *{key}*: {source}; the other keys are kept; "
            f"written as version {version + 1} with check-and-set on version {version}",
            restart_line(workloads, namespace),
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
            raise Invalid(no_password_policy(policy)) from exc
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
            f"Last rotated by Vault: {stamp(role.last_vault_rotation)} "
            f"({age(role.last_vault_rotation, now)}); automatic rotation: {period}",
            restart_line(workloads, namespace),
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
        new_version = write_kv(
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
                    raise Invalid(no_password_policy(policy)) from exc

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
                f"did not advance ({stamp(before)}); check the database engine's logs; no "
                "workload was restarted"
            )
        when = f" at {stamp(after)}" if after is not None else unconfirmed
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
