"""The Vault adapter against a real OpenBao dev server (``bao server -dev``).

Each test uses its own paths, groups and policies on the shared server.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import hvac.exceptions
import pytest
import requests

from actions.backends.vault import SEALED_MESSAGE, VaultBackend
from actions.errors import (
    ActionError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    TemporaryError,
)
from tests.fakes.openbao import OpenBao, free_port

pytest_plugins = ["tests.helpers.vault"]


@pytest.fixture
def vault(openbao: OpenBao) -> Iterator[VaultBackend]:
    backend = VaultBackend(url=openbao.url, token=openbao.root_token)
    yield backend
    backend.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_entity(client: Any, name: str) -> str:
    entity_id: str = client.secrets.identity.create_or_update_entity_by_name(name=name)["data"][
        "id"
    ]
    return entity_id


def make_group(client: Any, name: str, group_type: str = "internal") -> str:
    client.secrets.identity.create_or_update_group_by_name(
        name=name, group_type=group_type, policies=["kept-policy"]
    )
    group_id: str = client.secrets.identity.read_group_by_name(name=name)["data"]["id"]
    return group_id


# -- identity groups (issue 4) -------------------------------------------------------------------


def test_entity_id_finds_an_entity_by_name(openbao: OpenBao, vault: VaultBackend) -> None:
    name = unique("alice")
    expected = make_entity(openbao.client(), name)
    assert vault.entity_id(name) == expected


def test_entity_id_of_an_unknown_name_is_not_found(vault: VaultBackend) -> None:
    with pytest.raises(NotFound, match="no Vault identity entity named 'nobody-here'"):
        vault.entity_id("nobody-here")


def test_group_members_are_added_and_removed_idempotently(
    openbao: OpenBao, vault: VaultBackend
) -> None:
    client = openbao.client()
    group = unique("ops")
    make_group(client, group)
    alice = make_entity(client, unique("alice"))
    bob = make_entity(client, unique("bob"))

    assert vault.group_member_ids(group) == []
    vault.add_group_member(group, alice)
    vault.add_group_member(group, alice)  # idempotent
    vault.add_group_member(group, bob)
    assert sorted(vault.group_member_ids(group)) == sorted([alice, bob])
    # What Vault itself says, and the group's other fields untouched by the update.
    stored = client.secrets.identity.read_group_by_name(name=group)["data"]
    assert sorted(stored["member_entity_ids"]) == sorted([alice, bob])
    assert stored["policies"] == ["kept-policy"]
    # Vault knows the entity is in the group.
    assert stored["id"] in client.secrets.identity.read_entity(entity_id=alice)["data"]["group_ids"]

    assert vault.remove_group_member(group, alice) is True
    assert vault.remove_group_member(group, alice) is False
    assert vault.group_member_ids(group) == [bob]
    assert vault.remove_group_member(group, bob) is True
    assert vault.group_member_ids(group) == []


def test_membership_of_an_unknown_group_is_not_found(openbao: OpenBao, vault: VaultBackend) -> None:
    alice = make_entity(openbao.client(), unique("alice"))
    with pytest.raises(NotFound, match="no Vault identity group named 'no-such-group'"):
        vault.add_group_member("no-such-group", alice)
    with pytest.raises(NotFound):
        vault.remove_group_member("no-such-group", alice)
    with pytest.raises(NotFound):
        vault.group_member_ids("no-such-group")


def test_an_external_group_is_refused(openbao: OpenBao, vault: VaultBackend) -> None:
    client = openbao.client()
    group = unique("ext")
    make_group(client, group, group_type="external")
    alice = make_entity(client, unique("alice"))
    with pytest.raises(Invalid, match="external"):
        vault.add_group_member(group, alice)


def test_concurrent_adds_from_one_backend_are_not_lost(
    openbao: OpenBao, vault: VaultBackend
) -> None:
    client = openbao.client()
    group = unique("busy")
    make_group(client, group)
    entities = [make_entity(client, unique("user")) for _ in range(6)]
    errors: list[BaseException] = []

    def add(entity: str) -> None:
        try:
            vault.add_group_member(group, entity)
        except ActionError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(e,)) for e in entities]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(vault.group_member_ids(group)) == sorted(entities)


def test_group_update_without_permission_is_forbidden(openbao: OpenBao) -> None:
    client = openbao.client()
    group = unique("locked")
    make_group(client, group)
    alice = make_entity(client, unique("alice"))
    token = openbao.token_with_policy(
        unique("identity-read"), 'path "identity/group/name/*" { capabilities = ["read"] }'
    )
    backend = VaultBackend(url=openbao.url, token=token)
    try:
        assert backend.group_member_ids(group) == []
        with pytest.raises(Forbidden, match=r"opsgate's Vault token may not .*permission denied"):
            backend.add_group_member(group, alice)
    finally:
        backend.close()
    assert client.secrets.identity.read_group_by_name(name=group)["data"]["member_entity_ids"] in (
        None,
        [],
    )


# -- mounts ---------------------------------------------------------------------------------------


def test_mount_of_finds_the_longest_prefix_and_the_kv_version(
    openbao: OpenBao, vault: VaultBackend
) -> None:
    client = openbao.client()
    team = unique("team")
    client.sys.enable_secrets_engine("kv", path=f"{team}/kv", options={"version": "2"})
    client.sys.enable_secrets_engine("kv", path=f"{team}/kv-old", options={"version": "1"})

    default = vault.mount_of("secret/prod/payments/db")
    assert (default.path, default.type, default.kv_version) == ("secret/", "kv", 2)
    v2 = vault.mount_of(f"{team}/kv/app/db")
    assert (v2.path, v2.kv_version) == (f"{team}/kv/", 2)
    # "team/kv-old/..." starts with "team/kv" but is not inside the "team/kv/" mount.
    v1 = vault.mount_of(f"{team}/kv-old/app/db")
    assert (v1.path, v1.kv_version) == (f"{team}/kv-old/", 1)
    with pytest.raises(NotFound, match="no secrets engine is mounted at nowhere/x"):
        vault.mount_of("nowhere/x")


def test_mount_of_falls_back_to_the_ui_endpoint_without_sys_mounts(openbao: OpenBao) -> None:
    token = openbao.token_with_policy(
        unique("kv-only"), 'path "secret/data/app/*" { capabilities = ["read"] }'
    )
    backend = VaultBackend(url=openbao.url, token=token)
    try:
        mount = backend.mount_of("secret/app/db")
        assert (mount.path, mount.type, mount.kv_version) == ("secret/", "kv", 2)
        with pytest.raises(Forbidden, match="may not read the mount of"):
            backend.mount_of("elsewhere/app/db")
    finally:
        backend.close()


# -- KV v2 ----------------------------------------------------------------------------------------


def test_kv_write_from_version_keeps_other_keys_and_checks_and_sets(
    openbao: OpenBao, vault: VaultBackend
) -> None:
    client = openbao.client()
    path = f"{unique('app')}/db"
    client.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"username": "app", "password": "first-secret"}, mount_point="secret"
    )
    meta = vault.kv_metadata("secret", path)
    assert meta.current_version == 1
    assert set(meta.versions) == {1}
    assert not meta.versions[1].deleted
    assert vault.kv_keys("secret", path, 1) == ("password", "username")

    calls: list[str] = []

    def new_password() -> str:
        calls.append("called")
        return "second-secret"

    version = vault.kv_write_from_version(
        "secret", path, base_version=1, cas=1, new_values={"password": new_password}
    )
    assert version == 2
    assert calls == ["called"]
    stored = client.secrets.kv.v2.read_secret_version(
        path=path, version=2, mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    assert stored == {"username": "app", "password": "second-secret"}

    # The check-and-set: the version read (1) is no longer current; nothing is written.
    with pytest.raises(Conflict, match="check-and-set failed"):
        vault.kv_write_from_version(
            "secret", path, base_version=1, cas=1, new_values={"password": lambda: "third"}
        )
    assert vault.kv_metadata("secret", path).current_version == 2

    # Copying an old version (a restore) writes its data as a new version.
    assert vault.kv_write_from_version("secret", path, base_version=1, cas=2) == 3
    restored = client.secrets.kv.v2.read_secret_version(
        path=path, version=3, mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    assert restored == {"username": "app", "password": "first-secret"}


def test_kv_deleted_and_absent_versions(openbao: OpenBao, vault: VaultBackend) -> None:
    client = openbao.client()
    path = f"{unique('app')}/db"
    for value in ("a", "b"):
        client.secrets.kv.v2.create_or_update_secret(
            path=path, secret={"k": value}, mount_point="secret"
        )
    client.secrets.kv.v2.delete_secret_versions(path=path, versions=[1], mount_point="secret")
    meta = vault.kv_metadata("secret", path)
    assert meta.versions[1].deleted
    assert not meta.versions[2].deleted
    with pytest.raises(NotFound, match=r"version 1 of secret/.* cannot be read"):
        vault.kv_keys("secret", path, 1)
    with pytest.raises(NotFound, match="version 7"):
        vault.kv_keys("secret", path, 7)
    with pytest.raises(NotFound, match="there is no secret at secret/nothing/here"):
        vault.kv_metadata("secret", "nothing/here")


def test_generate_password_uses_the_policy(openbao: OpenBao, vault: VaultBackend) -> None:
    name = unique("pp")
    openbao.client().write_data(
        f"sys/policies/password/{name}",
        data={"policy": 'length = 24\nrule "charset" { charset = "xyz" }\n'},
    )
    password = vault.generate_password(name)
    assert len(password) == 24
    assert set(password) <= set("xyz")
    with pytest.raises(NotFound, match="no Vault password policy named 'missing-policy'"):
        vault.generate_password("missing-policy")


# -- errors at the boundary -----------------------------------------------------------------------


def test_a_token_without_permission_gets_forbidden(openbao: OpenBao) -> None:
    client = openbao.client()
    path = f"{unique('ro')}/db"
    client.secrets.kv.v2.create_or_update_secret(path=path, secret={"k": "v"}, mount_point="secret")
    token = openbao.token_with_policy(
        unique("read-only"),
        f'path "secret/data/{path}" {{ capabilities = ["read"] }}\n'
        f'path "secret/metadata/{path}" {{ capabilities = ["read"] }}\n',
    )
    backend = VaultBackend(url=openbao.url, token=token)
    try:
        assert backend.kv_metadata("secret", path).current_version == 1
        marker = f"MARKER-{uuid.uuid4().hex}"
        with pytest.raises(Forbidden) as caught:
            backend.kv_write_from_version(
                "secret", path, base_version=1, cas=1, new_values={"k": lambda: marker}
            )
        assert str(caught.value) == (
            f"opsgate's Vault token may not write to secret/data/{path}: permission denied"
        )
        assert isinstance(caught.value.__cause__, hvac.exceptions.Forbidden)
        # No frame kept alive by the error (nor the hvac error it chains) holds the value, nor
        # the secret's other data read for the write.
        for error in (caught.value, caught.value.__cause__):
            tb = error.__traceback__
            while tb is not None:
                frame = tb.tb_frame
                if frame.f_code.co_filename != __file__:  # the test's own frame knows it
                    held = repr(frame.f_locals) + "".join(
                        repr(getattr(getattr(v, "request", None), "body", ""))
                        for v in frame.f_locals.values()
                    )  # a requests.Response keeps the request it answered
                    assert marker not in held, frame.f_code.co_name
                    assert '"k": "v"' not in held, frame.f_code.co_name
                tb = tb.tb_next
    finally:
        backend.close()
    assert (
        client.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")["data"][
            "current_version"
        ]
        == 1
    )


def test_a_sealed_vault_is_a_temporary_error_and_no_hvac_type_leaks() -> None:
    with OpenBao() as bao:
        bao.client().secrets.kv.v2.create_or_update_secret(
            path="app/db", secret={"k": "v"}, mount_point="secret"
        )
        backend = VaultBackend(url=bao.url, token=bao.root_token)
        bao.seal()
        calls: list[Callable[[], object]] = [
            lambda: backend.mount_of("secret/app/db"),
            lambda: backend.kv_metadata("secret", "app/db"),
            lambda: backend.kv_keys("secret", "app/db", 1),
            lambda: backend.kv_write_from_version("secret", "app/db", base_version=1, cas=1),
            lambda: backend.generate_password("p"),
            lambda: backend.static_role("database", "r"),
            lambda: backend.rotate_static_role("database", "r"),
            lambda: backend.entity_id("alice"),
            lambda: backend.group_member_ids("g"),
            lambda: backend.add_group_member("g", "e"),
            lambda: backend.remove_group_member("g", "e"),
        ]
        for call in calls:
            with pytest.raises(TemporaryError) as caught:
                call()
            assert str(caught.value) == SEALED_MESSAGE
            assert type(caught.value).__module__ == "actions.errors"
            assert isinstance(caught.value.__cause__, hvac.exceptions.VaultDown)
        bao.unseal()
        assert backend.kv_metadata("secret", "app/db").current_version == 1
        backend.close()


def test_an_unreachable_vault_is_a_temporary_error() -> None:
    backend = VaultBackend(url=f"http://127.0.0.1:{free_port()}", token="t", timeout=2)
    try:
        with pytest.raises(TemporaryError, match="did not answer") as caught:
            backend.kv_metadata("secret", "app/db")
        assert isinstance(caught.value.__cause__, requests.exceptions.ConnectionError)
        assert caught.value.delay is not None
    finally:
        backend.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback HTTP server that reads each request and never answers; yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)  # read by the kernel, answered never

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


def test_a_lost_answer_to_a_write_does_not_claim_that_nothing_changed(silent_server: str) -> None:
    """A read that gets no answer changed nothing; a write may have been applied by Vault before
    its answer was lost, so the message says to check instead."""
    backend = VaultBackend(url=silent_server, token="t", timeout=0.3)
    try:
        with pytest.raises(TemporaryError) as read:
            backend.kv_metadata("secret", "app/db")
        assert str(read.value).endswith("(ReadTimeout); nothing was changed")
        with pytest.raises(TemporaryError) as write:
            backend.rotate_static_role("database", "app")
        assert str(write.value) == (
            f"Vault at {silent_server} did not answer while opsgate tried to rotate the static "
            "role database/rotate-role/app (ReadTimeout); Vault may or may not have made the "
            "change: check database/rotate-role/app before asking again"
        )
        assert isinstance(write.value.__cause__, requests.exceptions.ReadTimeout)
    finally:
        backend.close()
