"""``restore``: a KV v2 secret back to the data of an earlier version, written as a new version.

``/ops restore <path> --to-version N`` writes version N's data as a new version (check-and-set
against the current version); no version is ever deleted or destroyed. The workloads of the
rule's ``rotate.restart`` settings are then restarted, as after a rotation (:mod:`actions.rotate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from actions.base import Outcome, Preview, Target
from actions.errors import Invalid, NotFound
from actions.secret_kind import (
    PATH_PATTERN,
    RotateSettings,
    SecretKind,
    age,
    no_consumer_check,
    require_kv2,
    restart_line,
    split_path,
    stamp,
    write_kv,
)
from actions.spec import Arg, ArgType, Backends, KindSpec, Scope, Undo
from actions.vault import KvMetadata, KvVersion


class RestoreParams(BaseModel):
    """``/ops restore <path> --to-version N`` for a KV v2 secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(min_length=3, max_length=512, pattern=PATH_PATTERN)
    to_version: int = Field(ge=1)


def _build(b: Backends) -> Restore | None:
    if b.vault is None or b.restart_consumer is None:
        return None
    check = b.check_consumer or no_consumer_check
    return Restore(
        vault=b.vault, restart_consumer=b.restart_consumer, clock=b.clock, check_consumer=check
    )


def _undo(params: BaseModel, facts: Mapping[str, Any]) -> Undo:
    """Restoring the version that was current before (its data is kept)."""
    assert isinstance(params, RestoreParams)
    return Undo("restore", params.model_copy(update={"to_version": int(facts["version"])}))


KIND = KindSpec(
    name="restore",
    summary="write version N of a KV v2 secret as a new version (history is kept)",
    example='/ops restore secret/prod/payments/db --to-version 7 --reason "it broke login"',
    grammar=(
        Arg(
            "path",
            ArgType.VAULT_PATH,
            metavar="<secret-path>",
            help="the secret as Vault spells it (secret/prod/payments/db)",
        ),
        Arg(
            "to_version",
            ArgType.INTEGER,
            flags=("--to-version",),
            metavar="N",
            help="the version whose data is written again",
            low=1,
            noun="revision number",
            below="revisions start at 1",
        ),
    ),
    params_model=RestoreParams,
    scope=Scope.VAULT_PATH,
    reversible=False,  # writes yet another version, which consumers may use at once
    decided_with="rotate",
    undo=_undo,
    build=_build,
)


class Restore(SecretKind):
    """The restore request kind: version N's data written as a new KV v2 version.

    Constructed as :class:`actions.secret_kind.SecretKind`. After the write, the workloads in the
    rule's ``rotate.restart`` settings (if any) are restarted, as after a rotation, so they read
    the restored value.
    """

    name: ClassVar[str] = KIND.name
    reversible: ClassVar[bool] = KIND.reversible
    params_model: ClassVar[type[BaseModel]] = KIND.params_model

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
        mount, mount_name, inside = split_path(self._vault, full_path)
        require_kv2(mount, full_path, "restore")
        meta = self._vault.kv_metadata(mount_name, inside)
        wanted = self._check_version(full_path, meta, params.to_version)
        now = self._clock()
        current = meta.versions.get(meta.current_version)
        keys = self._vault.kv_keys(mount_name, inside, params.to_version)
        current_age = (
            f"created {stamp(current.created_time)} ({age(current.created_time, now)})"
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
            f"Version {params.to_version}: created {stamp(wanted.created_time)} "
            f"({age(wanted.created_time, now)}); keys: {', '.join(keys)}",
            f"Current version: {meta.current_version}, {current_age}",
            f"Written as new version {meta.current_version + 1} with check-and-set on version "
            f"{meta.current_version}; no version is deleted",
            restart_line(workloads, namespace),
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
        new_version = write_kv(
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
