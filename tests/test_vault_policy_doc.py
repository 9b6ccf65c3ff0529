"""docs/vault.md's ACL policy is enough for everything opsgate does, and keeps the rest out
of reach.

The policy is the ``hcl`` code block of docs/vault.md that begins ``# opsgate.hcl``, taken as it is
written; a real OpenBao dev server gives a token exactly that policy (no ``default`` policy), and
opsgate's own code (the VaultBackend adapter, and the rotate/restore kinds on top of it) runs
every operation with it. The password policy of the doc (``# opsgate-db.hcl``) is used as well.
"""

from __future__ import annotations

import re
import string
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import hvac.exceptions
import pytest

from actions.backends.vault import VaultBackend
from actions.base import Target
from actions.errors import Forbidden
from actions.restore import Restore, RestoreParams
from actions.rotate import Rotate, RotateParams
from approvals.lifecycle import Actor
from tests.fakes.kube import FakeKubernetes
from tests.fakes.openbao import OpenBao
from tests.fakes.postgres import OwnPostgres
from tests.helpers.grants import SETTINGS as GRANT_SETTINGS
from tests.helpers.grants import make_world

pytest_plugins = ["tests.helpers.vault"]

DOC = Path(__file__).resolve().parent.parent / "docs" / "vault.md"
NOW = datetime(2030, 1, 1, tzinfo=UTC)
PASSWORD_POLICY = "opsgate-db"  # the name docs/vault.md gives its password policy


def hcl_block(first_line: str) -> str:
    """The one ``hcl`` code block of docs/vault.md whose first line starts with ``first_line``."""
    blocks = re.findall(r"^```hcl\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)
    found = [b for b in blocks if b.startswith(first_line)]
    assert len(found) == 1, f"docs/vault.md has {len(found)} hcl blocks starting {first_line!r}"
    return str(found[0])


def without_block(hcl: str, path: str) -> str:
    """``hcl`` less its ``path "<path>" { … }`` block (blocks of the doc hold no nested braces
    except ``allowed_parameters``, which this is not used on)."""
    stripped, count = re.subn(rf'path "{re.escape(path)}" \{{[^}}]*\}}\n', "", hcl)
    assert count == 1
    return stripped


def no_restart(namespace: str, workload: str, context: str | None) -> str:
    raise AssertionError("no consumer is restarted in these tests")


def target(rotate: dict[str, str] | None = None) -> Target:
    return Target(
        environment="prod",
        kube_context="prod",
        namespace=None,
        settings={"rotate": rotate} if rotate else {},
    )


@pytest.fixture(scope="module")
def opsgate_token(openbao: OpenBao) -> str:
    """A token with exactly docs/vault.md's policy; the doc's password policy exists."""
    openbao.client().write_data(
        f"sys/policies/password/{PASSWORD_POLICY}", data={"policy": hcl_block("# opsgate-db.hcl")}
    )
    return openbao.token_with_policy(
        f"opsgate-doc-{uuid.uuid4().hex[:6]}", hcl_block("# opsgate.hcl")
    )


@pytest.fixture
def backend(openbao: OpenBao, opsgate_token: str) -> Iterator[VaultBackend]:
    vault = VaultBackend(url=openbao.url, token=opsgate_token)
    yield vault
    vault.close()


def test_the_token_has_exactly_the_documented_policy(openbao: OpenBao, opsgate_token: str) -> None:
    info = openbao.client().auth.token.lookup(opsgate_token)["data"]
    assert len(info["policies"]) == 1
    assert info["policies"][0].startswith("opsgate-doc-")


def test_the_policy_is_enough_to_rotate_and_restore_a_kv_secret(
    openbao: OpenBao, backend: VaultBackend
) -> None:
    root = openbao.client()
    inside = f"prod/{uuid.uuid4().hex[:8]}/db"
    first = {"username": "payments", "password": "first-value"}
    root.secrets.kv.v2.create_or_update_secret(path=inside, secret=first, mount_point="secret")
    rule = {"password_policy": PASSWORD_POLICY, "key": "password"}

    rotate = Rotate(vault=backend, restart_consumer=no_restart, clock=lambda: NOW)
    params = RotateParams(path=f"secret/{inside}")
    preview = rotate.preview(params, target=target(rule))  # sys/mounts, metadata, key names
    assert preview.facts["keys"] == ["password", "username"]
    outcome = rotate.execute(params, target=target(rule), preview=preview)  # generate + cas write

    assert outcome.facts["version"] == 2
    second = root.secrets.kv.v2.read_secret_version(
        path=inside, mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    assert second["username"] == "payments"
    assert len(second["password"]) == 40  # the doc's password policy made it
    assert set(second["password"]) <= set(string.ascii_letters + string.digits)

    restore = Restore(vault=backend, restart_consumer=no_restart, clock=lambda: NOW)
    back = RestoreParams(path=f"secret/{inside}", to_version=1)
    restored = restore.execute(
        back, target=target(), preview=restore.preview(back, target=target())
    )
    assert restored.facts["version"] == 3
    third = root.secrets.kv.v2.read_secret_version(
        path=inside, mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    assert third == first

    # the adapter's calls, one by one
    assert backend.mount_of(f"secret/{inside}").path == "secret/"
    assert backend.kv_metadata("secret", inside).current_version == 3
    assert backend.kv_keys("secret", inside, 2) == ("password", "username")
    assert backend.kv_write_from_version("secret", inside, base_version=2, cas=3) == 4
    assert len(backend.generate_password(PASSWORD_POLICY)) == 40


def test_sys_mounts_is_optional_as_the_doc_says(openbao: OpenBao) -> None:
    root = openbao.client()
    inside = f"prod/{uuid.uuid4().hex[:8]}/db"
    root.secrets.kv.v2.create_or_update_secret(
        path=inside, secret={"password": "p"}, mount_point="secret"
    )
    hcl = without_block(hcl_block("# opsgate.hcl"), "sys/mounts")
    token = openbao.token_with_policy(f"opsgate-doc-nomounts-{uuid.uuid4().hex[:6]}", hcl)
    vault = VaultBackend(url=openbao.url, token=token)
    try:
        rotate = Rotate(vault=vault, restart_consumer=no_restart, clock=lambda: NOW)
        params = RotateParams(path=f"secret/{inside}")
        rotate.execute(params, target=target(), preview=rotate.preview(params, target=target()))
        assert vault.kv_metadata("secret", inside).current_version == 2
    finally:
        vault.close()


def test_the_policy_is_enough_for_access_grants_in_opsgate_groups(
    openbao: OpenBao, backend: VaultBackend
) -> None:
    root = openbao.client()
    suffix = uuid.uuid4().hex[:8]
    name, group = f"alice-{suffix}", f"opsgate-payments-readers-{suffix}"
    alice = root.secrets.identity.create_or_update_entity_by_name(name=name)["data"]["id"]
    root.secrets.identity.create_or_update_group_by_name(
        name=group, group_type="internal", policies=["payments-read"]
    )

    assert backend.entity_id(name) == alice
    assert backend.group_member_ids(group) == []
    backend.add_group_member(group, alice)
    assert backend.group_member_ids(group) == [alice]
    stored = root.secrets.identity.read_group_by_name(name=group)["data"]
    assert stored["member_entity_ids"] == [alice]
    assert stored["policies"] == ["payments-read"]  # the update sent the members only
    assert backend.remove_group_member(group, alice) is True
    assert backend.group_member_ids(group) == []
    assert backend.remove_group_member(group, alice) is False


def test_the_policy_is_enough_for_a_grant_its_end_and_the_vault_drift_check(
    openbao: OpenBao,
    backend: VaultBackend,
    tmp_path: Path,
    database_url: str,
    kube: FakeKubernetes,
) -> None:
    """The access kind and the grants service over the policy-limited token: the read of the
    members before a grant, the grant's end, and the drift check's read and removal."""
    root = openbao.client()
    suffix = uuid.uuid4().hex[:8]
    name, group = f"alice-{suffix}", f"opsgate-payments-writers-{suffix}"
    alice = root.secrets.identity.create_or_update_entity_by_name(name=name)["data"]["id"]
    mallory = root.secrets.identity.create_or_update_entity_by_name(name=f"mallory-{suffix}")[
        "data"
    ]["id"]
    root.secrets.identity.create_or_update_group_by_name(name=group, group_type="internal")
    world = make_world(tmp_path, database_url, kube, vault=backend)
    try:
        rule = {
            **GRANT_SETTINGS,
            "vault_groups": {"edit": group},
            "identity": {"kubernetes_user": "alice@example.com", "vault_entity": name},
        }
        grant = world.grant(role="edit", settings=rule)
        assert world.row(grant.id).vault_member_added is True
        backend.add_group_member(group, mallory)  # as if by hand
        service = world.service(vault_groups=lambda: {group: False})
        assert service.drift_check() == [f"vault:{group}/{mallory}"]
        assert backend.group_member_ids(group) == [alice]
        service.revoke(grant.id, actor=Actor("U0SRE1"), reason="done")
        assert backend.group_member_ids(group) == []
    finally:
        world.backend.close()
        world.engine.dispose()


def test_the_policy_is_enough_to_rotate_a_database_static_role(
    openbao: OpenBao, backend: VaultBackend, opsgate_token: str, own_postgres: OwnPostgres
) -> None:
    root = openbao.client()
    if "database/" not in root.sys.list_mounted_secrets_engines()["data"]:
        root.sys.enable_secrets_engine("database", path="database")  # the doc's mount name
    suffix = uuid.uuid4().hex[:6]
    user, connection, role = f"doc_{suffix}", f"pg-{suffix}", f"doc-{suffix}"
    own_postgres.execute(f"CREATE ROLE {user} LOGIN PASSWORD 'set-by-the-dba'")
    root.write_data(
        f"database/config/{connection}",
        data={
            "plugin_name": "postgresql-database-plugin",
            "connection_url": (
                f"postgresql://{{{{username}}}}:{{{{password}}}}@{own_postgres.host}:"
                f"{own_postgres.port}/postgres?sslmode=disable"
            ),
            "username": own_postgres.superuser,
            "password": own_postgres.superuser_password,
            "allowed_roles": [role],
            "password_authentication": "scram-sha-256",
        },
    )
    root.write_data(
        f"database/static-roles/{role}",
        data={"db_name": connection, "username": user, "rotation_period": "24h"},
    )
    old = root.read(f"database/static-creds/{role}")["data"]["password"]  # test side only

    rotate = Rotate(vault=backend, restart_consumer=no_restart, clock=lambda: NOW)
    params = RotateParams(path=f"database/static-roles/{role}")
    preview = rotate.preview(params, target=target())
    assert preview.facts["username"] == user
    rotate.execute(params, target=target(), preview=preview)

    new = root.read(f"database/static-creds/{role}")["data"]["password"]
    assert new != old
    assert own_postgres.can_login(user, new)
    # the token reads the role, never its password
    with pytest.raises(hvac.exceptions.Forbidden):
        openbao.client(opsgate_token).read(f"database/static-creds/{role}")


def test_everything_else_is_forbidden(
    openbao: OpenBao, backend: VaultBackend, opsgate_token: str
) -> None:
    root = openbao.client()
    suffix = uuid.uuid4().hex[:8]
    # another KV mount, and the same mount outside the prefix
    other = f"kv-{suffix}"
    root.sys.enable_secrets_engine("kv", path=other, options={"version": "2"})
    root.secrets.kv.v2.create_or_update_secret(path="app", secret={"k": "v"}, mount_point=other)
    root.secrets.kv.v2.create_or_update_secret(
        path=f"team/{suffix}", secret={"k": "v"}, mount_point="secret"
    )
    with pytest.raises(Forbidden, match=f"may not read the metadata of {other}/metadata/app"):
        backend.kv_metadata(other, "app")
    with pytest.raises(Forbidden, match="permission denied"):
        backend.kv_keys(other, "app", 1)
    with pytest.raises(Forbidden, match="permission denied"):
        backend.kv_write_from_version("secret", f"team/{suffix}", base_version=1, cas=1)
    assert (
        root.secrets.kv.v2.read_secret_metadata(path=f"team/{suffix}", mount_point="secret")[
            "data"
        ]["current_version"]
        == 1
    )

    as_opsgate = openbao.client(opsgate_token)
    inside = f"prod/{suffix}/db"
    root.secrets.kv.v2.create_or_update_secret(path=inside, secret={"k": "v"}, mount_point="secret")
    forbidden_raw = {
        "create a secret": lambda: as_opsgate.secrets.kv.v2.create_or_update_secret(
            path=f"prod/{suffix}/new", secret={"k": "v"}, mount_point="secret"
        ),
        "delete a version": lambda: as_opsgate.secrets.kv.v2.delete_secret_versions(
            path=inside, versions=[1], mount_point="secret"
        ),
        "destroy a version": lambda: as_opsgate.secrets.kv.v2.destroy_secret_versions(
            path=inside, versions=[1], mount_point="secret"
        ),
        "list secrets": lambda: as_opsgate.secrets.kv.v2.list_secrets(
            path="prod", mount_point="secret"
        ),
        "read a password policy": lambda: as_opsgate.read(
            f"sys/policies/password/{PASSWORD_POLICY}"
        ),
        "write an ACL policy": lambda: as_opsgate.sys.create_or_update_policy(
            name=f"x-{suffix}", policy='path "*" { capabilities = ["sudo"] }'
        ),
    }
    for what, call in forbidden_raw.items():
        try:
            call()
        except hvac.exceptions.Forbidden:
            continue
        pytest.fail(f"the documented policy lets opsgate {what}")

    # identity: other groups are out of reach, and so are the policies of opsgate's own groups
    alice = root.secrets.identity.create_or_update_entity_by_name(name=f"alice-{suffix}")["data"][
        "id"
    ]
    admins, ours = f"admins-{suffix}", f"opsgate-x-{suffix}"
    root.secrets.identity.create_or_update_group_by_name(
        name=admins, group_type="internal", policies=["admin"]
    )
    root.secrets.identity.create_or_update_group_by_name(
        name=ours, group_type="internal", policies=["payments-read"]
    )
    with pytest.raises(Forbidden, match="permission denied"):
        backend.add_group_member(admins, alice)
    assert root.secrets.identity.read_group_by_name(name=admins)["data"]["member_entity_ids"] in (
        None,
        [],
    )
    with pytest.raises(hvac.exceptions.Forbidden):
        as_opsgate.write_data(f"identity/group/name/{ours}", data={"policies": ["admin"]})
    assert root.secrets.identity.read_group_by_name(name=ours)["data"]["policies"] == [
        "payments-read"
    ]
