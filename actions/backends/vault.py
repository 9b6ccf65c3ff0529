"""The Vault adapter: the only module that imports ``hvac``; it implements
:class:`actions.vault.VaultPort` against Vault or OpenBao over their HTTP API.

Every ``hvac`` and ``requests`` exception is turned into an :mod:`actions.errors` error, chained
with ``raise … from e``; no third-party exception type leaves this module. Messages are written
here, never copied from a response body, so that a secret value cannot slip into one. Secret
values read for a KV write live only in the local variables of :meth:`kv_write_from_version` and
are dropped as soon as the write returns.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import hvac
import hvac.exceptions
import requests

from actions.backends.vault_auth import TokenKeeper, VaultLogin
from actions.errors import (
    ActionError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PermanentError,
    TemporaryError,
)
from actions.metrics import counted
from actions.vault import KvMetadata, KvVersion, Mount, StaticRole

logger = logging.getLogger(__name__)

SEALED_MESSAGE = "Vault is sealed; ask a Vault operator to unseal it. Nothing was changed."

GROUP_UPDATE_ATTEMPTS = 3
"""How many times a group membership change is re-applied when another writer raced it."""


class VaultBackend:
    """Vault or OpenBao at ``url`` (``VAULT_ADDR``) with ``token`` (``VAULT_TOKEN``), or logged
    in with ``login`` (:mod:`actions.backends.vault_auth`).

    ``timeout`` is in seconds, per HTTP request. Call :meth:`close` at the end.
    """

    def __init__(
        self,
        *,
        url: str,
        token: str | None,
        timeout: float = 10.0,
        login: VaultLogin | None = None,
        check_interval: float = 60.0,
    ) -> None:
        self._url = url
        self._client = hvac.Client(url=url, token=token, timeout=timeout)
        self._group_lock = threading.Lock()
        self.token_keeper: TokenKeeper | None = None
        """With ``login`` (AppRole or Kubernetes auth instead of ``token``): keeps the token
        alive; run its ``keep`` every ``check_interval`` seconds (:mod:`vault_auth`)."""
        if login is not None:
            self.token_keeper = TokenKeeper(self._client, login, check_interval=check_interval)

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._client.adapter.close()

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _translated(
        self, op: str, path: str, *, not_found: str | None = None, write: bool = False
    ) -> Iterator[None]:
        """Turn hvac/requests exceptions raised inside the block into :mod:`actions.errors`.

        ``op`` is a verb phrase ("read", "write to" …) and ``path`` the Vault path, for the
        messages; ``not_found`` is the message for a 404 (default: "nothing at <path>");
        ``write`` says the block sends a change, which Vault may have applied when its answer
        is lost.
        """
        try:
            yield
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            # The finished frames under the failed call (hvac, requests) may hold the request
            # body, a secret value among it; the chained exception must not keep them alive.
            traceback.clear_frames(exc.__traceback__)
            raise counted("vault", self._translate(exc, op, path, not_found, write=write)) from exc

    def _translate(
        self, exc: Exception, op: str, path: str, not_found: str | None, *, write: bool = False
    ) -> ActionError:
        """The :mod:`actions.errors` error for an hvac or requests exception."""
        if isinstance(exc, hvac.exceptions.VaultDown):
            if "sealed" in _errors(exc).lower():
                return TemporaryError(SEALED_MESSAGE, delay=30.0)
            return TemporaryError(
                f"Vault at {self._url} is unavailable (503) while trying to {op} {path}; "
                "nothing was changed. Try again later.",
                delay=30.0,
            )
        if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
            return Forbidden(f"opsgate's Vault token may not {op} {path}: permission denied")
        if isinstance(exc, hvac.exceptions.InvalidPath):
            return NotFound(not_found or f"Vault has nothing at {path}")
        if isinstance(exc, hvac.exceptions.InvalidRequest):
            reason = _errors(exc)
            if "check-and-set" in reason:
                return Conflict(
                    f"{path} changed underneath opsgate (check-and-set failed); nothing was written"
                )
            return Invalid(f"Vault refused to {op} {path}: {reason or 'invalid request'}")
        if isinstance(
            exc,
            hvac.exceptions.RateLimitExceeded
            | hvac.exceptions.InternalServerError
            | hvac.exceptions.BadGateway,
        ):
            return TemporaryError(
                f"Vault failed to {op} {path}: {_errors(exc) or type(exc).__name__}; "
                "try again later",
                delay=10.0,
            )
        if isinstance(exc, hvac.exceptions.VaultError):
            return PermanentError(
                f"Vault answered an unexpected error while trying to {op} {path}: "
                f"{_errors(exc) or type(exc).__name__}"
            )
        if write and not isinstance(exc, requests.exceptions.ConnectTimeout):
            # the change may have reached Vault: only a connection never made proves it did not
            return TemporaryError(
                f"Vault at {self._url} did not answer while opsgate tried to {op} {path} "
                f"({type(exc).__name__}); Vault may or may not have made the change: check "
                f"{path} before asking again",
                delay=10.0,
            )
        return TemporaryError(
            f"Vault at {self._url} did not answer while trying to {op} {path} "
            f"({type(exc).__name__}); nothing was changed",
            delay=10.0,
        )

    def _get(self, path: str, op: str, **kw: Any) -> dict[str, Any]:
        with self._translated(op, path, not_found=kw.pop("not_found", None)):
            response = self._client.adapter.get(f"/v1/{path}", **kw)
        return _json(response)

    def _post(
        self, path: str, op: str, body: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        with self._translated(op, path, not_found=kw.pop("not_found", None), write=True):
            response = self._client.adapter.post(f"/v1/{path}", json=body or {}, **kw)
        return _json(response)

    # -- mounts -----------------------------------------------------------------------------

    def mount_of(self, full_path: str) -> Mount:
        """The mount holding ``full_path``: the longest matching prefix in ``sys/mounts``.

        A token that may not read ``sys/mounts`` falls back to
        ``sys/internal/ui/mounts/<path>`` (what the Vault CLI does for ``vault kv``), which any
        token with a capability on the path may read. Raises NotFound when no mount matches and
        Forbidden when neither may be read.
        """
        clean = full_path.strip("/")
        try:
            listing = self._get("sys/mounts", "list the mounts in")
        except Forbidden:
            info = (
                self._get(
                    f"sys/internal/ui/mounts/{_quote(clean)}",
                    "read the mount of",
                    not_found=f"no secrets engine is mounted at {clean}",
                ).get("data")
                or {}
            )
            if not info.get("path"):
                raise NotFound(f"no secrets engine is mounted at {clean}") from None
            return _mount(str(info["path"]), info)
        mounts = listing.get("data") or {
            k: v for k, v in listing.items() if k.endswith("/") and isinstance(v, dict)
        }
        best: str | None = None
        for mount_path in mounts:
            if (clean + "/").startswith(mount_path) and (
                best is None or len(mount_path) > len(best)
            ):
                best = mount_path
        if best is None:
            raise NotFound(f"no secrets engine is mounted at {clean}")
        return _mount(best, mounts[best])

    # -- KV v2 ------------------------------------------------------------------------------

    def kv_metadata(self, mount: str, path: str) -> KvMetadata:
        """``GET <mount>/metadata/<path>``: current version and every version kept.

        Raises NotFound when the secret does not exist.
        """
        data = (
            self._get(
                f"{mount}/metadata/{_quote(path)}",
                "read the metadata of",
                not_found=f"there is no secret at {mount}/{path}",
            ).get("data")
            or {}
        )
        now = datetime.now(UTC)
        versions: dict[int, KvVersion] = {}
        for number, info in (data.get("versions") or {}).items():
            deletion = _time(info.get("deletion_time"))
            versions[int(number)] = KvVersion(
                version=int(number),
                created_time=_time(info.get("created_time")) or now,
                deleted=deletion is not None and deletion <= now,
                destroyed=bool(info.get("destroyed")),
            )
        return KvMetadata(current_version=int(data.get("current_version") or 0), versions=versions)

    def _kv_data(self, mount: str, path: str, version: int) -> dict[str, Any]:
        """The data of one version. The caller must drop it as soon as it is used."""
        body = self._get(
            f"{mount}/data/{_quote(path)}",
            "read",
            params={"version": version},
            not_found=(
                f"version {version} of {mount}/{path} cannot be read "
                "(it does not exist, or was deleted or destroyed)"
            ),
        )
        data = (body.get("data") or {}).get("data")
        if not isinstance(data, dict):
            raise NotFound(
                f"version {version} of {mount}/{path} cannot be read "
                "(it does not exist, or was deleted or destroyed)"
            )
        return data

    def kv_keys(self, mount: str, path: str, version: int) -> tuple[str, ...]:
        """The sorted key names of ``version``'s data (the values are dropped at once)."""
        data = self._kv_data(mount, path, version)
        keys = tuple(sorted(data))
        del data
        return keys

    def kv_write_from_version(
        self,
        mount: str,
        path: str,
        *,
        base_version: int,
        cas: int,
        new_values: Mapping[str, Callable[[], str]] | None = None,
    ) -> int:
        """Read ``base_version``, set each key of ``new_values`` to its callable's value, and
        ``POST <mount>/data/<path>`` with ``options.cas = cas``. Returns the new version.

        Raises Conflict when the current version is no longer ``cas`` (Vault wrote nothing).
        """
        data = self._kv_data(mount, path, base_version)
        try:
            for key, generate in (new_values or {}).items():
                data[key] = generate()
            body = {"options": {"cas": cas}, "data": data}
            try:
                written = self._post(f"{mount}/data/{_quote(path)}", "write to", body)
            finally:
                del body
        finally:
            data.clear()
            del data
        return int((written.get("data") or {}).get("version") or 0)

    def generate_password(self, policy: str) -> str:
        """A password from the password policy ``policy``
        (``GET sys/policies/password/<policy>/generate``). Raises NotFound if it does not exist."""
        body = self._get(
            f"sys/policies/password/{_quote(policy)}/generate",
            "generate a password with policy",
            not_found=f"there is no Vault password policy named '{policy}'",
        )
        password = (body.get("data") or {}).get("password")
        del body
        if not isinstance(password, str) or not password:
            raise PermanentError(f"the password policy '{policy}' returned no password")
        return password

    # -- database static roles --------------------------------------------------------------

    def static_role(self, mount: str, role: str) -> StaticRole:
        """``GET <mount>/static-roles/<role>`` (the role, never its password)."""
        data = (
            self._get(
                f"{mount}/static-roles/{_quote(role)}",
                "read the static role",
                not_found=f"there is no static role '{role}' in the database engine at {mount}/",
            ).get("data")
            or {}
        )
        return StaticRole(
            name=role,
            username=str(data.get("username") or ""),
            last_vault_rotation=_time(data.get("last_vault_rotation")),
            rotation_period=int(data.get("rotation_period") or 0),
        )

    def rotate_static_role(self, mount: str, role: str) -> None:
        """``POST <mount>/rotate-role/<role>``: Vault sets a new password in the database."""
        self._post(
            f"{mount}/rotate-role/{_quote(role)}",
            "rotate the static role",
            not_found=f"there is no static role '{role}' in the database engine at {mount}/",
        )

    # -- identity ---------------------------------------------------------------------------

    def entity_id(self, name: str) -> str:
        """``GET identity/entity/name/<name>`` → its ``id``. Raises NotFound if absent."""
        data = (
            self._get(
                f"identity/entity/name/{_quote(name)}",
                "read the identity entity",
                not_found=f"there is no Vault identity entity named '{name}'",
            ).get("data")
            or {}
        )
        entity = data.get("id")
        if not entity:
            raise NotFound(f"there is no Vault identity entity named '{name}'")
        return str(entity)

    def _group(self, group_name: str) -> dict[str, Any]:
        data = self._get(
            f"identity/group/name/{_quote(group_name)}",
            "read the identity group",
            not_found=f"there is no Vault identity group named '{group_name}'",
        ).get("data")
        if not isinstance(data, dict) or not data:
            raise NotFound(f"there is no Vault identity group named '{group_name}'")
        return data

    def group_member_ids(self, group_name: str) -> list[str]:
        """The group's ``member_entity_ids`` (entities that are direct members)."""
        return list(self._group(group_name).get("member_entity_ids") or [])

    def add_group_member(self, group_name: str, entity_id: str) -> None:
        """Add ``entity_id`` to the internal group's ``member_entity_ids``; idempotent."""
        self._change_membership(group_name, entity_id, member=True)

    def remove_group_member(self, group_name: str, entity_id: str) -> bool:
        """Remove ``entity_id`` from the group's members: True if removed, False if it was not a
        member (idempotent)."""
        return self._change_membership(group_name, entity_id, member=False)

    def _change_membership(self, group_name: str, entity_id: str, *, member: bool) -> bool:
        """Read-modify-write of ``member_entity_ids``, which Vault replaces whole
        (``GET`` then ``POST identity/group/name/<name>`` with that one field only).

        Vault's group update has no check-and-set, so two writers can lose each other's
        change. This method narrows the window: writes from this process are serialized by a
        lock; across processes, the group is re-read after the write and, if its
        ``modify_index`` moved by more than our own write (someone else wrote in between) and
        our change is not in place, the change is re-applied (up to
        :data:`GROUP_UPDATE_ATTEMPTS` times). A change made by another writer between our read
        and our write can still be lost; this is the documented race. Returns whether the
        membership was changed by this call.
        """
        with self._group_lock:
            changed = False
            for _attempt in range(GROUP_UPDATE_ATTEMPTS):
                group = self._group(group_name)
                if group.get("type") != "internal":
                    raise Invalid(
                        f"the Vault identity group '{group_name}' is {group.get('type')}; "
                        "only internal groups have members set by opsgate"
                    )
                members = list(group.get("member_entity_ids") or [])
                if (entity_id in members) == member:
                    return changed
                if member:
                    members.append(entity_id)
                else:
                    members.remove(entity_id)
                # by name, not by ID: a Vault policy can then limit opsgate's token to the
                # groups made for it (``identity/group/name/opsgate-*``; docs/vault.md)
                self._post(
                    f"identity/group/name/{_quote(group_name)}",
                    "update the members of the identity group",
                    {"member_entity_ids": members},
                    not_found=f"there is no Vault identity group named '{group_name}'",
                )
                changed = True
                after = self._group(group_name)
                if after.get("id") != group.get("id"):
                    # deleted between our read and our write: Vault made a new, empty group
                    raise Conflict(
                        f"the Vault identity group '{group_name}' was deleted or replaced while "
                        "opsgate changed its members; check the group, then try again"
                    )
                before_index = int(group.get("modify_index") or 0)
                after_index = int(after.get("modify_index") or 0)
                if after_index > before_index + 1:
                    logger.warning(
                        "Vault identity group %s was also changed by another writer while opsgate "
                        "updated its members (modify_index %d -> %d); check its members",
                        group_name,
                        before_index,
                        after_index,
                    )
                in_place = (entity_id in (after.get("member_entity_ids") or [])) == member
                if in_place:
                    return True
            raise Conflict(
                f"the members of the Vault identity group '{group_name}' kept changing while "
                "opsgate updated them; try again"
            )


def _json(response: Any) -> dict[str, Any]:
    """hvac's JSON adapter returns a dict for a JSON body and the Response for a 204."""
    return response if isinstance(response, dict) else {}


def _errors(exc: hvac.exceptions.VaultError) -> str:
    """The ``errors`` Vault returned (never the raw body, which could hold data)."""
    return "; ".join(str(e) for e in (exc.errors or []))


def _quote(path: str) -> str:
    return quote(path.strip("/"), safe="/")


def _time(value: Any) -> datetime | None:
    """Parse Vault's RFC 3339 times (nanoseconds, ``Z``); '' or the zero time → None."""
    if not value or not isinstance(value, str) or value.startswith("0001-01-01"):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _mount(path: str, info: Mapping[str, Any]) -> Mount:
    mount_type = str(info.get("type") or "")
    kv_version: int | None = None
    if mount_type in ("kv", "generic"):
        options = info.get("options") or {}
        kv_version = int(options.get("version") or 1)
    return Mount(path=path, type=mount_type, kv_version=kv_version)
