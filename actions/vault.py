"""The port through which actions reach Vault (or OpenBao).

``actions.backends.vault.VaultBackend`` implements it. Every method raises :mod:`actions.errors`
errors only. Secret values never come out of it: KV writes take the keys to change as callables
that the adapter calls just before the write, and data that is copied from one version to another
stays inside the adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Mount:
    """A secrets engine mount: ``path`` as Vault lists it (``secret/``, with the trailing slash),
    ``type`` (``kv``, ``database`` …) and, for KV, ``kv_version`` (1 or 2; None otherwise)."""

    path: str
    type: str
    kv_version: int | None = None


@dataclass(frozen=True)
class KvVersion:
    """One version of a KV v2 secret, from its metadata (``<mount>/metadata/<path>``).

    ``deleted`` is a soft delete (``deletion_time`` set and in the past); ``destroyed`` is
    permanent (``vault kv destroy``).
    """

    version: int
    created_time: datetime
    deleted: bool
    destroyed: bool


@dataclass(frozen=True)
class KvMetadata:
    """The metadata of a KV v2 secret: ``current_version`` (0: none yet) and each version kept."""

    current_version: int
    versions: Mapping[int, KvVersion]


@dataclass(frozen=True)
class StaticRole:
    """A static role of the database secrets engine (``<mount>/static-roles/<role>``), never its
    password: ``username`` in the database, ``last_vault_rotation`` (None if never), and
    ``rotation_period`` in seconds."""

    name: str
    username: str
    last_vault_rotation: datetime | None
    rotation_period: int


class VaultPort(Protocol):
    """Mount lookup, KV v2 versions, database static roles and identity groups.

    Paths are split as Vault splits them: ``mount`` without slashes (``secret``), ``path`` inside
    the mount (``prod/payments/db``).
    """

    def mount_of(self, full_path: str) -> Mount:
        """The mount that holds ``full_path`` (longest prefix). NotFound if none."""
        ...

    def kv_metadata(self, mount: str, path: str) -> KvMetadata:
        """``GET <mount>/metadata/<path>``. NotFound if the secret does not exist."""
        ...

    def kv_keys(self, mount: str, path: str, version: int) -> tuple[str, ...]:
        """The key names (sorted) of one version's data; never the values. NotFound if that
        version is deleted, destroyed or absent."""
        ...

    def kv_write_from_version(
        self,
        mount: str,
        path: str,
        *,
        base_version: int,
        cas: int,
        new_values: Mapping[str, Callable[[], str]] | None = None,
    ) -> int:
        """Write a new version: the data of ``base_version``, with each key of ``new_values`` set
        to what its callable returns, with check-and-set ``cas``. Returns the new version.

        Raises Conflict when the secret's current version is no longer ``cas`` (nothing written),
        NotFound when ``base_version`` cannot be read.
        """
        ...

    def generate_password(self, policy: str) -> str:
        """``GET sys/policies/password/<policy>/generate``. NotFound if no such policy."""
        ...

    def static_role(self, mount: str, role: str) -> StaticRole:
        """``GET <mount>/static-roles/<role>``. NotFound if absent."""
        ...

    def rotate_static_role(self, mount: str, role: str) -> None:
        """``POST <mount>/rotate-role/<role>``: Vault sets a new password in the database."""
        ...

    def entity_id(self, name: str) -> str:
        """The ID of the identity entity named ``name``. NotFound if absent."""
        ...

    def add_group_member(self, group_name: str, entity_id: str) -> None:
        """Add an entity to an internal identity group; a no-op if it is already a member.
        NotFound if the group does not exist, Invalid if it is an external group."""
        ...

    def remove_group_member(self, group_name: str, entity_id: str) -> bool:
        """Remove an entity from an internal group: True if it was removed, False if it was not
        a member. NotFound if the group does not exist."""
        ...

    def group_member_ids(self, group_name: str) -> list[str]:
        """The ``member_entity_ids`` of a group. NotFound if the group does not exist."""
        ...
