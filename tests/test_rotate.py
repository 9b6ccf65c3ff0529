"""``rotate`` and ``restore`` against a real OpenBao dev server (and a real PostgreSQL for the
database static role). Restarts go through a recording consumer; the lead's end-to-end tests
drive the real restart + rollout.
"""

from __future__ import annotations

import gc
import logging
import re
import secrets
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from actions.backends.kubernetes import KubernetesBackend
from actions.backends.vault import SEALED_MESSAGE, VaultBackend
from actions.base import Outcome, Preview, Target
from actions.errors import (
    ActionError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PermanentError,
    TemporaryError,
)
from actions.registry import build_registry
from actions.restore import Restore, RestoreParams
from actions.rotate import Rotate, RotateParams
from actions.secret_kind import Generator, generated_value
from actions.vault import StaticRole
from tests.fakes.kube import FakeKubernetes, deployment, statefulset, write_kubeconfig
from tests.fakes.openbao import OpenBao
from tests.fakes.postgres import OwnPostgres

pytest_plugins = ["tests.helpers.vault"]

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class Consumers:
    """A recording ``restart_consumer``: workloads named in ``failing`` do not come back."""

    failing: set[str] = field(default_factory=set)
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)

    def __call__(self, namespace: str, workload: str, context: str | None) -> str:
        self.calls.append((namespace, workload, context))
        if workload in self.failing:
            raise ActionError(f"{workload}: rollout did not finish: 1/3 pods ready after 300 s")
        return f"{workload}: rolled out 3/3 in 2 s"


@pytest.fixture
def vault(openbao: OpenBao) -> Iterator[VaultBackend]:
    backend = VaultBackend(url=openbao.url, token=openbao.root_token)
    yield backend
    backend.close()


@pytest.fixture
def consumers() -> Consumers:
    return Consumers()


@pytest.fixture
def rotate(vault: VaultBackend, consumers: Consumers) -> Rotate:
    return Rotate(vault=vault, restart_consumer=consumers, clock=lambda: NOW)


@pytest.fixture
def restore(vault: VaultBackend, consumers: Consumers) -> Restore:
    return Restore(vault=vault, restart_consumer=consumers, clock=lambda: NOW)


def target(rotate: dict[str, Any] | None = None, namespace: str | None = None) -> Target:
    settings = {"rotate": rotate} if rotate is not None else {}
    return Target(environment="prod", kube_context="prod", namespace=namespace, settings=settings)


def new_secret(openbao: OpenBao, data: dict[str, str]) -> tuple[str, str]:
    """Write ``data`` as version 1 of a fresh secret; returns (full path, path in the mount)."""
    inside = f"prod/{uuid.uuid4().hex[:8]}/db"
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=inside, secret=data, mount_point="secret"
    )
    return f"secret/{inside}", inside


def read(openbao: OpenBao, inside: str, version: int | None = None) -> dict[str, str]:
    data: dict[str, str] = openbao.client().secrets.kv.v2.read_secret_version(
        path=inside, version=version, mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    return data


def current_version(openbao: OpenBao, inside: str) -> int:
    meta = openbao.client().secrets.kv.v2.read_secret_metadata(path=inside, mount_point="secret")
    return int(meta["data"]["current_version"])


def vault_created(openbao: OpenBao, inside: str, version: int) -> datetime:
    """The created_time of a version, as Vault reports it (to the second, UTC)."""
    meta = openbao.client().secrets.kv.v2.read_secret_metadata(path=inside, mount_point="secret")
    stamp = meta["data"]["versions"][str(version)]["created_time"]
    return datetime.fromisoformat(stamp[:19]).replace(tzinfo=UTC)


def everything_said(*items: Any) -> str:
    """All text a preview, outcome or error could show or store."""
    parts: list[str] = []
    for item in items:
        if isinstance(item, Preview):
            parts += [item.target, *item.lines, repr(item.facts)]
        elif isinstance(item, Outcome):
            parts += [item.summary, repr(item.facts)]
        elif isinstance(item, BaseException):
            parts += [str(item), repr(item)]
        else:
            parts.append(str(item))
    return "\n".join(parts)


# -- KV rotation ----------------------------------------------------------------------------------


def test_rotation_writes_a_new_version_keeps_other_keys_and_restarts_consumers(
    openbao: OpenBao,
    rotate: Rotate,
    consumers: Consumers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    old = "old-Secret-Value-123"
    path, inside = new_secret(openbao, {"username": "payments", "password": old})
    rule = {"key": "password", "restart": ["deployment/payments-api"], "namespace": "payments"}
    params = RotateParams(path=path, restart=("payments-worker",))

    preview = rotate.preview(params, target=target(rule))

    assert preview.target == path
    assert preview.facts == {
        "kind": "kv",
        "path": path,
        "mount": "secret",
        "secret_path": inside,
        "version": 1,
        "keys": ["password", "username"],
        "key": "password",
        "source": {"generator": {"length": 32, "charset_size": 62}},
        "restart": ["deployment/payments-api", "payments-worker"],
        "namespace": "payments",
    }
    text = "\n".join(preview.lines)
    created = vault_created(openbao, inside, 1)
    assert preview.lines[0] == f"Rotate *{path}* (KV v2 secret in secret/, environment prod)"
    assert "Keys: password, username" in text
    # its creation time and its age (NOW is in 2030: days and hours)
    assert re.search(
        rf"^Current version: 1, created {created:%Y-%m-%d %H:%M}:\d\d UTC \(\d+ d \d+ h ago\)$",
        text,
        re.MULTILINE,
    ), text
    assert "New value for key *password*" in text
    assert "deployment/payments-api, payments-worker" in text
    assert consumers.calls == []  # the preview changes nothing
    assert current_version(openbao, inside) == 1

    outcome = rotate.execute(params, target=target(rule), preview=preview)

    assert current_version(openbao, inside) == 2
    stored = read(openbao, inside)
    new = stored["password"]
    assert stored["username"] == "payments"
    assert new != old
    assert len(new) == 32
    assert set(new) <= set(string.ascii_letters + string.digits)
    assert read(openbao, inside, 1) == {"username": "payments", "password": old}  # history kept
    assert consumers.calls == [
        ("payments", "deployment/payments-api", "prod"),
        ("payments", "payments-worker", "prod"),
    ]
    assert outcome.facts["version"] == 2
    assert outcome.facts["previous_version"] == 1
    assert outcome.facts["keys"] == ["password", "username"]
    assert [c["ok"] for c in outcome.facts["consumers"]] == [True, True]
    assert outcome.summary.split("\n") == [
        f"rotated key password of {path}: new version 2 (was 1)",
        "• deployment/payments-api: rolled out 3/3 in 2 s",
        "• payments-worker: rolled out 3/3 in 2 s",
    ]

    said = everything_said(preview, outcome, caplog.text)
    assert old not in said
    assert new not in said


def test_the_password_policy_of_the_rule_makes_the_value(openbao: OpenBao, rotate: Rotate) -> None:
    policy = f"pp-{uuid.uuid4().hex[:6]}"
    openbao.client().write_data(
        f"sys/policies/password/{policy}",
        data={"policy": 'length = 40\nrule "charset" { charset = "ABCDEF" }\n'},
    )
    path, inside = new_secret(openbao, {"token": "before"})
    rule = {"password_policy": policy}
    params = RotateParams(path=path)  # one key: no --key needed
    preview = rotate.preview(params, target=target(rule))
    assert preview.facts["source"] == {"password_policy": policy}
    assert f"Vault password policy `{policy}`" in "\n".join(preview.lines)
    rotate.execute(params, target=target(rule), preview=preview)
    value = read(openbao, inside)["token"]
    assert len(value) == 40
    assert set(value) <= set("ABCDEF")


def test_the_generator_of_the_rule_makes_the_value(openbao: OpenBao, rotate: Rotate) -> None:
    path, inside = new_secret(openbao, {"a": "1", "b": "2"})
    rule = {"generator": {"length": 48, "charset": "xy"}}
    params = RotateParams(path=path, key="b")
    preview = rotate.preview(params, target=target(rule))
    rotate.execute(params, target=target(rule), preview=preview)
    stored = read(openbao, inside)
    assert stored["a"] == "1"
    assert len(stored["b"]) == 48
    assert set(stored["b"]) <= {"x", "y"}


def test_generated_value_draws_only_from_the_charset() -> None:
    value = generated_value(Generator(length=200, charset="ab"))
    assert len(value) == 200
    assert set(value) == {"a", "b"}  # 200 draws: both appear


def test_a_concurrent_writer_makes_the_rotation_fail_cleanly(
    openbao: OpenBao, rotate: Rotate, consumers: Consumers
) -> None:
    path, inside = new_secret(openbao, {"password": "v1"})
    rule = {"restart": ["deployment/api"], "namespace": "payments"}
    params = RotateParams(path=path)
    preview = rotate.preview(params, target=target(rule))
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=inside, secret={"password": "someone-else"}, mount_point="secret"
    )

    with pytest.raises(Conflict) as caught:
        rotate.execute(params, target=target(rule), preview=preview)

    assert str(caught.value) == (
        f"{path} changed since the preview (version 1 is now 2); nothing was written; ask again"
    )
    assert current_version(openbao, inside) == 2
    assert read(openbao, inside) == {"password": "someone-else"}
    assert consumers.calls == []


def test_a_consumer_that_does_not_come_back_fails_the_request_and_offers_the_restore(
    openbao: OpenBao, vault: VaultBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    consumers = Consumers(failing={"deployment/payments-api"})
    rotate = Rotate(vault=vault, restart_consumer=consumers, clock=lambda: NOW)
    old = "very-old-password"
    path, inside = new_secret(openbao, {"password": old})
    params = RotateParams(
        path=path,
        restart=("deployment/payments-api", "deployment/payments-worker"),
        namespace="payments",
    )
    preview = rotate.preview(params, target=target())

    with pytest.raises(PermanentError) as caught:
        rotate.execute(params, target=target(), preview=preview)

    # what happened, then what to do, then each workload (the failed one first)
    assert str(caught.value).split("\n") == [
        f"rotated key password of {path}: new version 2 (was 1), but 1 of 2 workload "
        "restart(s) failed.",
        "The new value stays in place. To go back to the old value: "
        f"`/ops restore {path} --to-version 1`",
        "To restart a failed workload again: `/ops restart deployment/payments-api -n payments`",
        "• deployment/payments-api: FAILED: deployment/payments-api: rollout did not finish: "
        "1/3 pods ready after 300 s",
        "• deployment/payments-worker: rolled out 3/3 in 2 s",
    ]
    # every consumer was tried, and the write did happen
    assert [c[1] for c in consumers.calls] == [
        "deployment/payments-api",
        "deployment/payments-worker",
    ]
    assert current_version(openbao, inside) == 2
    new = read(openbao, inside)["password"]
    said = everything_said(preview, caught.value, caplog.text)
    assert old not in said
    assert new not in said


def test_key_choice_is_checked_in_the_preview(openbao: OpenBao, rotate: Rotate) -> None:
    path, _ = new_secret(openbao, {"username": "u", "password": "p"})
    with pytest.raises(Invalid, match="has 2 keys \\(password, username\\); say which one"):
        rotate.preview(RotateParams(path=path), target=target())
    with pytest.raises(Invalid, match="has no key 'token'"):
        rotate.preview(RotateParams(path=path, key="token"), target=target())
    # --key wins over the rule's key
    preview = rotate.preview(
        RotateParams(path=path, key="username"), target=target({"key": "password"})
    )
    assert preview.facts["key"] == "username"


def test_workloads_to_restart_need_a_namespace(openbao: OpenBao, rotate: Rotate) -> None:
    path, _ = new_secret(openbao, {"password": "p"})
    with pytest.raises(Invalid, match="need a namespace"):
        rotate.preview(RotateParams(path=path, restart=("api",)), target=target())


def test_a_missing_secret_or_mount_and_a_kv_v1_secret(openbao: OpenBao, rotate: Rotate) -> None:
    with pytest.raises(NotFound, match="there is no secret at secret/prod/absent/db"):
        rotate.preview(RotateParams(path="secret/prod/absent/db"), target=target())
    with pytest.raises(NotFound, match="no secrets engine is mounted at nomount/x"):
        rotate.preview(RotateParams(path="nomount/x"), target=target())
    mount = f"kv1-{uuid.uuid4().hex[:6]}"
    client = openbao.client()
    client.sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    client.write_data(f"{mount}/app", data={"password": "p"})
    with pytest.raises(Invalid, match="KV version 1 engine"):
        rotate.preview(RotateParams(path=f"{mount}/app"), target=target())


def test_params_are_validated() -> None:
    with pytest.raises(ValidationError):
        RestoreParams(path="secret/app", to_version=0)
    with pytest.raises(ValidationError):
        RotateParams(path="secret/has space")
    with pytest.raises(ValidationError):
        RotateParams(path="secret")  # a mount alone is not a secret


def test_invalid_rule_settings_are_reported(openbao: OpenBao, rotate: Rotate) -> None:
    path, _ = new_secret(openbao, {"password": "p"})
    with pytest.raises(Invalid, match=r"rotate settings are invalid \(generator.length\)"):
        rotate.preview(RotateParams(path=path), target=target({"generator": {"length": 2}}))


# -- restore --------------------------------------------------------------------------------------


def test_restore_writes_an_old_version_as_a_new_one(
    openbao: OpenBao, rotate: Rotate, restore: Restore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    old = "the-original-value"
    path, inside = new_secret(openbao, {"username": "app", "password": old})
    params = RotateParams(path=path, key="password")
    rotate.execute(params, target=target(), preview=rotate.preview(params, target=target()))
    rotated = read(openbao, inside)["password"]

    back = RestoreParams(path=path, to_version=1)
    preview = restore.preview(back, target=target())
    text = "\n".join(preview.lines)
    assert "Restore *" + path + "* to the data of version 1" in text
    assert "Version 1: created " in text
    assert "keys: password, username" in text
    assert "Current version: 2" in text
    assert "Written as new version 3" in text
    assert preview.facts["version"] == 2
    assert preview.facts["to_version"] == 1

    outcome = restore.execute(back, target=target(), preview=preview)

    assert outcome.facts["version"] == 3
    assert read(openbao, inside) == {"username": "app", "password": old}
    assert read(openbao, inside, 2)["password"] == rotated  # history is never destroyed
    assert "new version 3" in outcome.summary
    said = everything_said(preview, outcome, caplog.text)
    assert old not in said
    assert rotated not in said


def test_restore_refuses_versions_it_cannot_restore(openbao: OpenBao, restore: Restore) -> None:
    path, inside = new_secret(openbao, {"k": "1"})
    client = openbao.client()
    for value in ("2", "3", "4"):
        client.secrets.kv.v2.create_or_update_secret(
            path=inside, secret={"k": value}, mount_point="secret"
        )
    client.secrets.kv.v2.destroy_secret_versions(path=inside, versions=[1], mount_point="secret")
    client.secrets.kv.v2.delete_secret_versions(path=inside, versions=[2], mount_point="secret")

    with pytest.raises(Invalid, match=r"version 1 of .* was destroyed; it cannot be restored"):
        restore.preview(RestoreParams(path=path, to_version=1), target=target())
    with pytest.raises(Invalid, match=r"version 2 of .* was deleted; .*undelete"):
        restore.preview(RestoreParams(path=path, to_version=2), target=target())
    with pytest.raises(NotFound, match="has no version 9 \\(versions kept: 1 to 4\\)"):
        restore.preview(RestoreParams(path=path, to_version=9), target=target())
    with pytest.raises(Invalid, match="already the current version"):
        restore.preview(RestoreParams(path=path, to_version=4), target=target())
    preview = restore.preview(RestoreParams(path=path, to_version=3), target=target())
    assert preview.facts["keys"] == ["k"]


def test_restore_fails_cleanly_on_a_concurrent_write(openbao: OpenBao, restore: Restore) -> None:
    path, inside = new_secret(openbao, {"k": "1"})
    client = openbao.client()
    client.secrets.kv.v2.create_or_update_secret(
        path=inside, secret={"k": "2"}, mount_point="secret"
    )
    back = RestoreParams(path=path, to_version=1)
    preview = restore.preview(back, target=target())
    client.secrets.kv.v2.create_or_update_secret(
        path=inside, secret={"k": "3"}, mount_point="secret"
    )
    with pytest.raises(Conflict, match="version 2 is now 3\\); nothing was written"):
        restore.execute(back, target=target(), preview=preview)
    assert read(openbao, inside) == {"k": "3"}


# -- failures at the boundary ---------------------------------------------------------------------


def test_a_sealed_vault_gives_a_clear_message() -> None:
    with OpenBao() as bao:
        bao.client().secrets.kv.v2.create_or_update_secret(
            path="prod/app/db", secret={"password": "p"}, mount_point="secret"
        )
        backend = VaultBackend(url=bao.url, token=bao.root_token)
        kind = Rotate(vault=backend, restart_consumer=Consumers(), clock=lambda: NOW)
        params = RotateParams(path="secret/prod/app/db")
        preview = kind.preview(params, target=target())
        bao.seal()
        with pytest.raises(TemporaryError) as caught:
            kind.execute(params, target=target(), preview=preview)
        assert str(caught.value) == SEALED_MESSAGE
        with pytest.raises(TemporaryError, match="Vault is sealed"):
            kind.preview(params, target=target())
        bao.unseal()
        assert (
            bao.client().secrets.kv.v2.read_secret_metadata(
                path="prod/app/db", mount_point="secret"
            )["data"]["current_version"]
            == 1
        )
        backend.close()


def test_a_token_without_write_permission_is_forbidden(openbao: OpenBao) -> None:
    path, inside = new_secret(openbao, {"password": "p"})
    token = openbao.token_with_policy(
        f"ro-{uuid.uuid4().hex[:6]}",
        f'path "secret/data/{inside}" {{ capabilities = ["read"] }}\n'
        f'path "secret/metadata/{inside}" {{ capabilities = ["read"] }}\n',
    )
    backend = VaultBackend(url=openbao.url, token=token)
    try:
        kind = Rotate(vault=backend, restart_consumer=Consumers(), clock=lambda: NOW)
        params = RotateParams(path=path)
        preview = kind.preview(params, target=target())  # reading is allowed
        with pytest.raises(Forbidden) as caught:
            kind.execute(params, target=target(), preview=preview)
        assert str(caught.value) == (
            f"opsgate's Vault token may not write to secret/data/{inside}: permission denied"
        )
    finally:
        backend.close()
    assert current_version(openbao, inside) == 1


def test_the_registry_has_rotate_and_restore_only_with_vault(vault: VaultBackend) -> None:
    kube = KubernetesBackend(kubeconfig=None)  # connects lazily: never here
    assert "rotate" not in build_registry(kube=kube, clock=lambda: NOW)
    registry = build_registry(kube=kube, clock=lambda: NOW, vault=vault)
    assert isinstance(registry["rotate"], Rotate)
    assert isinstance(registry["restore"], Restore)


# -- database static role -------------------------------------------------------------------------


def static_role(openbao: OpenBao, own_postgres: OwnPostgres) -> tuple[str, str, str]:
    """A database engine on a fresh mount over ``own_postgres``, with one static role over a
    fresh PostgreSQL user; returns (mount, role, user)."""
    client = openbao.client()
    suffix = uuid.uuid4().hex[:6]
    mount, user, connection, role = f"database-{suffix}", f"app_{suffix}", "pg", f"app-{suffix}"
    own_postgres.execute(f"CREATE ROLE {user} LOGIN PASSWORD 'set-by-the-dba'")
    client.sys.enable_secrets_engine("database", path=mount)
    client.write_data(
        f"{mount}/config/{connection}",
        data={
            "plugin_name": "postgresql-database-plugin",
            "connection_url": (
                f"postgresql://{{{{username}}}}:{{{{password}}}}@{own_postgres.host}:"
                f"{own_postgres.port}/postgres?sslmode=disable"
            ),
            "username": own_postgres.superuser,
            "password": own_postgres.superuser_password,
            "allowed_roles": [role],
            "verify_connection": True,
            "password_authentication": "scram-sha-256",
        },
    )
    client.write_data(
        f"{mount}/static-roles/{role}",
        data={"db_name": connection, "username": user, "rotation_period": "24h"},
    )
    return mount, role, user


def test_a_database_static_role_is_rotated_in_a_real_postgresql(
    openbao: OpenBao,
    own_postgres: OwnPostgres,
    rotate: Rotate,
    consumers: Consumers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = openbao.client()
    mount, role, user = static_role(openbao, own_postgres)
    old = client.read(f"{mount}/static-creds/{role}")["data"]["password"]  # test side only
    assert own_postgres.can_login(user, old)
    assert not own_postgres.can_login(user, "set-by-the-dba")  # the role took it over

    path = f"{mount}/static-roles/{role}"
    params = RotateParams(path=path, restart=("deployment/app",), namespace="payments")
    preview = rotate.preview(params, target=target())
    assert preview.facts["kind"] == "database_static_role"
    assert preview.facts["username"] == user
    assert preview.facts["role"] == role
    assert f"database user `{user}`" in "\n".join(preview.lines)
    assert "automatic rotation: every 86400 s" in "\n".join(preview.lines)
    # when Vault last set the password, and how long ago (NOW is in 2030: days and hours)
    assert re.search(
        r"^Last rotated by Vault: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ d \d+ h ago\)",
        preview.lines[1],
    ), preview.lines[1]

    outcome = rotate.execute(params, target=target(), preview=preview)

    new = client.read(f"{mount}/static-creds/{role}")["data"]["password"]
    assert new != old
    assert not own_postgres.can_login(user, old)
    assert own_postgres.can_login(user, new)
    assert consumers.calls == [("payments", "deployment/app", "prod")]
    assert outcome.facts["role"] == role
    assert datetime.fromisoformat(outcome.facts["last_vault_rotation"]) > datetime.fromisoformat(
        preview.facts["last_vault_rotation"]
    )
    said = everything_said(preview, outcome, caplog.text)
    assert old not in said
    assert new not in said


def test_a_database_path_must_name_a_static_role(openbao: OpenBao, rotate: Rotate) -> None:
    mount = f"db-{uuid.uuid4().hex[:6]}"
    openbao.client().sys.enable_secrets_engine("database", path=mount)
    with pytest.raises(Invalid, match=f"name a static role: {mount}/static-roles/<role>"):
        rotate.preview(RotateParams(path=f"{mount}/creds/x"), target=target())
    with pytest.raises(NotFound, match="no static role 'ghost'"):
        rotate.preview(RotateParams(path=f"{mount}/static-roles/ghost"), target=target())


def test_age_is_computed_from_the_injected_clock(openbao: OpenBao, vault: VaultBackend) -> None:
    path, _ = new_secret(openbao, {"password": "p"})
    created = vault.kv_metadata("secret", path.removeprefix("secret/")).versions[1].created_time
    later = Rotate(
        vault=vault,
        restart_consumer=Consumers(),
        clock=lambda: created + timedelta(days=3, hours=4),
    )
    preview = later.preview(RotateParams(path=path), target=target())
    assert "(3 d 4 h ago)" in "\n".join(preview.lines)


# -- consumers are checked in the preview ---------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeKubernetes, KubernetesBackend]]:
    """A fake cluster (context ``prod``) with deployment/payments-api and statefulset/ledger in
    namespace payments, and the real Kubernetes adapter on it."""
    with FakeKubernetes() as fake:
        fake.add(deployment("payments-api", "payments", replicas=3, image="payments:1"))
        fake.add(statefulset("ledger", "payments", replicas=1, image="ledger:3"))
        fake.add(deployment("frozen", "payments", replicas=1, image="frozen:1"))
        backend = KubernetesBackend(
            kubeconfig=str(write_kubeconfig(tmp_path / "kubeconfig", {"prod": fake})),
            request_timeout=2.0,
        )
        backend.patch_workload(
            "prod", "Deployment", "payments", "frozen", {"spec": {"paused": True}}
        )
        try:
            yield fake, backend
        finally:
            backend.close()


def applied_patches(fake: FakeKubernetes) -> int:
    """How many PATCHes the cluster applied (server-side dry runs, ``dryRun=All``, excluded)."""
    return len([r for r in fake.requests_matching(method="PATCH") if "dryRun" not in r.query])


def dry_run_paths(fake: FakeKubernetes) -> list[str]:
    """The paths of the ``dryRun=All`` PATCHes: what the restart kind's preview validated."""
    return [r.path for r in fake.requests_matching(method="PATCH") if "dryRun" in r.query]


def checked_kinds(
    cluster: tuple[FakeKubernetes, KubernetesBackend], vault: VaultBackend, consumers: Consumers
) -> tuple[Rotate, Restore]:
    """Rotate and Restore as the registry builds them: consumers checked by the restart kind."""
    registry = build_registry(
        kube=cluster[1], clock=lambda: NOW, vault=vault, restart_consumer=consumers
    )
    rotate, restore = registry["rotate"], registry["restore"]
    assert isinstance(rotate, Rotate)
    assert isinstance(restore, Restore)
    return rotate, restore


def test_the_preview_names_the_consumers_as_the_cluster_resolves_them(
    openbao: OpenBao,
    vault: VaultBackend,
    consumers: Consumers,
    cluster: tuple[FakeKubernetes, KubernetesBackend],
) -> None:
    rotate, _ = checked_kinds(cluster, vault, consumers)
    path, _ = new_secret(openbao, {"password": "p"})
    patches_before = applied_patches(cluster[0])
    rule = {"restart": ["payments-api"], "namespace": "payments"}
    # a bare name, kubectl's short kind, and the same Deployment named twice
    params = RotateParams(path=path, restart=("sts/ledger", "deployment/payments-api"))

    preview = rotate.preview(params, target=target(rule))

    assert preview.facts["restart"] == ["deployment/payments-api", "statefulset/ledger"]
    assert (
        "Then restart, one by one, in namespace *payments*: "
        "deployment/payments-api, statefulset/ledger"
    ) in preview.lines
    rotate.execute(params, target=target(rule), preview=preview)
    assert [c[1] for c in consumers.calls] == ["deployment/payments-api", "statefulset/ledger"]
    # the check reads and dry-runs each named restart (as Restart.preview does) ...
    assert set(dry_run_paths(cluster[0])) == {
        "/apis/apps/v1/namespaces/payments/deployments/payments-api",
        "/apis/apps/v1/namespaces/payments/statefulsets/ledger",
    }
    # ... and applies nothing: the restarts went through the recording consumer
    assert applied_patches(cluster[0]) == patches_before


def test_a_consumer_that_does_not_exist_is_refused_in_the_preview(
    openbao: OpenBao,
    vault: VaultBackend,
    consumers: Consumers,
    cluster: tuple[FakeKubernetes, KubernetesBackend],
) -> None:
    rotate, restore = checked_kinds(cluster, vault, consumers)
    path, inside = new_secret(openbao, {"password": "p"})
    patches_before = applied_patches(cluster[0])

    with pytest.raises(NotFound) as caught:
        rotate.preview(
            RotateParams(path=path, restart=("payments-api", "typo", "deploy/gone")),
            target=target(namespace="payments"),
        )

    message = str(caught.value)
    assert message.startswith("cannot restart the secret's consumers afterwards: ")
    assert "no Deployment, StatefulSet or DaemonSet named 'typo' in namespace payments" in message
    assert "no Deployment named 'gone' in namespace payments" in message
    assert "payments-api" not in message  # the one that exists is not blamed
    assert "Nothing was written; fix --restart (or the rule's rotate.restart)" in message
    # restore checks the rule's consumers the same way
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=inside, secret={"password": "q"}, mount_point="secret"
    )
    with pytest.raises(NotFound, match="named 'typo' in namespace payments"):
        restore.preview(
            RestoreParams(path=path, to_version=1),
            target=target({"restart": ["typo"], "namespace": "payments"}),
        )
    assert consumers.calls == []
    assert current_version(openbao, inside) == 2  # only the test's own write
    assert applied_patches(cluster[0]) == patches_before


def test_a_consumer_that_cannot_be_restarted_is_refused_as_invalid(
    openbao: OpenBao,
    vault: VaultBackend,
    consumers: Consumers,
    cluster: tuple[FakeKubernetes, KubernetesBackend],
) -> None:
    rotate, _ = checked_kinds(cluster, vault, consumers)
    path, _ = new_secret(openbao, {"password": "p"})
    ns = target(namespace="payments")
    with pytest.raises(Invalid, match="'cronjob' is not a workload kind"):
        rotate.preview(RotateParams(path=path, restart=("cronjob/nightly",)), target=ns)
    with pytest.raises(Invalid, match="deployment/frozen is paused"):
        rotate.preview(RotateParams(path=path, restart=("frozen",)), target=ns)
    # a missing one and a paused one: Invalid, naming both
    with pytest.raises(Invalid) as caught:
        rotate.preview(RotateParams(path=path, restart=("typo", "frozen")), target=ns)
    assert not isinstance(caught.value, NotFound)
    assert "named 'typo'" in str(caught.value)
    assert "deployment/frozen is paused" in str(caught.value)


def test_other_errors_of_the_check_are_not_reworded(openbao: OpenBao, vault: VaultBackend) -> None:
    def forbidden(namespace: str, workload: str, context: str | None) -> str:
        raise Forbidden(f"opsgate may not read deployments in {namespace}")

    rotate = Rotate(
        vault=vault, restart_consumer=Consumers(), clock=lambda: NOW, check_consumer=forbidden
    )
    path, _ = new_secret(openbao, {"password": "p"})
    with pytest.raises(Forbidden, match=r"^opsgate may not read deployments in payments$"):
        rotate.preview(
            RotateParams(path=path, restart=("api",)), target=target(namespace="payments")
        )


class ReadBackFails(VaultBackend):
    """The real adapter, except that reading a static role fails once its rotation was asked
    for (Vault sealed between the two calls, say)."""

    rotated = False

    def rotate_static_role(self, mount: str, role: str) -> None:
        super().rotate_static_role(mount, role)
        self.rotated = True

    def static_role(self, mount: str, role: str) -> StaticRole:
        if self.rotated:
            raise TemporaryError(SEALED_MESSAGE, delay=30.0)
        return super().static_role(mount, role)


def test_a_static_role_rotated_but_not_read_back_still_restarts_and_says_so(
    openbao: OpenBao, own_postgres: OwnPostgres
) -> None:
    mount, role, user = static_role(openbao, own_postgres)
    client = openbao.client()
    old = client.read(f"{mount}/static-creds/{role}")["data"]["password"]  # test side only
    backend = ReadBackFails(url=openbao.url, token=openbao.root_token)
    consumers = Consumers(failing={"deployment/worker"})
    try:
        kind = Rotate(vault=backend, restart_consumer=consumers, clock=lambda: NOW)
        params = RotateParams(
            path=f"{mount}/static-roles/{role}",
            restart=("deployment/app", "deployment/worker"),
            namespace="payments",
        )
        preview = kind.preview(params, target=target())
        with pytest.raises(PermanentError) as caught:
            kind.execute(params, target=target(), preview=preview)
    finally:
        backend.close()
    # the password did change, so the workloads were restarted, and the message does not
    # pretend that nothing changed
    assert not own_postgres.can_login(user, old)
    assert [c[1] for c in consumers.calls] == ["deployment/app", "deployment/worker"]
    message = str(caught.value)
    assert message.startswith(
        f"rotated the password of database static role {role} ({mount}/static-roles/{role}) "
        "(opsgate could not read the role back to confirm it: Vault is sealed"
    )
    assert "Nothing was changed" not in message.split("\n", 1)[1]
    assert "but 1 of 2 workload restart(s) failed" in message
    assert "The old password no longer works and a static role has no version to restore" in (
        message
    )
    assert "`/ops restart deployment/worker -n payments`" in message


# -- the rule's password policy, the environment, restore details ---------------------------------


def test_a_password_policy_vault_does_not_have_is_refused_before_anything_is_written(
    openbao: OpenBao, rotate: Rotate, consumers: Consumers
) -> None:
    path, inside = new_secret(openbao, {"password": "p"})
    with pytest.raises(Invalid) as caught:
        rotate.preview(RotateParams(path=path), target=target({"password_policy": "typo"}))
    assert str(caught.value) == (
        "Vault has no password policy named 'typo' (the rule's rotate.password_policy); nothing "
        "was written; fix policy.yml or create the password policy in Vault"
    )
    # removed between the preview and the approval: the same message, not "version deleted"
    policy = f"pp-{uuid.uuid4().hex[:6]}"
    client = openbao.client()
    client.write_data(
        f"sys/policies/password/{policy}",
        data={"policy": 'length = 20\nrule "charset" { charset = "abc" }\n'},
    )
    rule = {"password_policy": policy, "restart": ["deployment/api"], "namespace": "payments"}
    params = RotateParams(path=path)
    preview = rotate.preview(params, target=target(rule))
    client.delete(f"sys/policies/password/{policy}")
    with pytest.raises(Invalid, match=f"^Vault has no password policy named '{policy}'"):
        rotate.execute(params, target=target(rule), preview=preview)
    assert current_version(openbao, inside) == 1
    assert consumers.calls == []


def test_the_preview_names_no_environment_when_there_is_none(
    openbao: OpenBao, rotate: Rotate, restore: Restore
) -> None:
    path, inside = new_secret(openbao, {"password": "p"})
    none = Target(environment="", kube_context=None, namespace=None)
    preview = rotate.preview(RotateParams(path=path), target=none)
    assert preview.lines[0] == f"Rotate *{path}* (KV v2 secret in secret/)"
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=inside, secret={"password": "q"}, mount_point="secret"
    )
    back = restore.preview(RestoreParams(path=path, to_version=1), target=none)
    assert back.lines[0] == f"Restore *{path}* to the data of version 1"


def test_the_restore_preview_says_when_the_keys_differ(openbao: OpenBao, restore: Restore) -> None:
    path, inside = new_secret(openbao, {"password": "p"})
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=inside, secret={"password": "q", "api_token": "t"}, mount_point="secret"
    )
    preview = restore.preview(RestoreParams(path=path, to_version=1), target=target())
    assert "; keys: password" in preview.lines[1]
    assert preview.lines[2].endswith("; its keys differ: api_token, password")
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=inside, secret={"password": "r"}, mount_point="secret"
    )
    same = restore.preview(RestoreParams(path=path, to_version=1), target=target())
    assert "differ" not in same.lines[2]


def test_a_version_destroyed_after_the_restore_preview_writes_nothing(
    openbao: OpenBao, restore: Restore, consumers: Consumers
) -> None:
    path, inside = new_secret(openbao, {"k": "1"})
    client = openbao.client()
    client.secrets.kv.v2.create_or_update_secret(
        path=inside, secret={"k": "2"}, mount_point="secret"
    )
    back = RestoreParams(path=path, to_version=1)
    rule = {"restart": ["deployment/api"], "namespace": "payments"}
    preview = restore.preview(back, target=target(rule))
    client.secrets.kv.v2.destroy_secret_versions(path=inside, versions=[1], mount_point="secret")
    with pytest.raises(Conflict) as caught:
        restore.execute(back, target=target(rule), preview=preview)
    assert str(caught.value) == (
        f"version 1 of {path} can no longer be read (deleted or destroyed since the preview); "
        "nothing was written"
    )
    assert current_version(openbao, inside) == 2
    assert consumers.calls == []


# -- values are not kept in memory ----------------------------------------------------------------


def holders_of(pattern: str) -> list[tuple[str, str]]:
    """``(type of the holder, name of the group that matched)`` for each live object that
    refers to a str or bytes matching ``pattern`` (a regular expression of named groups).

    Every object the garbage collector tracks is asked for its referents (what its type's
    ``tp_traverse`` visits: the items of a dict or list, an instance's attributes even when they
    are not in a ``__dict__``), and containers it does not track (a dict or tuple of strings
    only) are opened in turn: so a value is found wherever anything keeps it alive.
    """
    rx = re.compile(pattern)
    gc.collect()
    found: list[tuple[str, str]] = []
    seen: set[int] = set()
    todo = gc.get_objects()
    while todo:
        obj = todo.pop()
        for ref in gc.get_referents(obj):
            if isinstance(ref, str | bytes | bytearray):
                text = ref if isinstance(ref, str) else bytes(ref).decode("latin-1")
                match = rx.search(text)
                if match:
                    found.append((type(obj).__name__, str(match.lastgroup)))
            elif not gc.is_tracked(ref) and id(ref) not in seen:
                seen.add(id(ref))
                todo.append(ref)
    return found


@pytest.mark.parametrize("source", ["password_policy", "generator", "restore"])
def test_no_value_is_held_in_memory_once_the_write_returned(
    openbao: OpenBao, vault: VaultBackend, consumers: Consumers, source: str
) -> None:
    """The new value, the old one and the secret's other keys are each unmistakable (a charset
    of their own): after the write none is held by anything the garbage collector can see."""
    old = "".join(secrets.choice("JKLM") for _ in range(40))
    kept = "".join(secrets.choice("RSTU") for _ in range(40))
    path, inside = new_secret(openbao, {"password": old, "other": kept})
    if source == "restore":
        openbao.client().secrets.kv.v2.create_or_update_secret(
            path=inside, secret={"password": "x", "other": "y"}, mount_point="secret"
        )
    policy = f"pp-{uuid.uuid4().hex[:6]}"
    openbao.client().write_data(
        f"sys/policies/password/{policy}",
        data={"policy": 'length = 40\nrule "charset" { charset = "QVWZ" }\n'},
    )
    rule: dict[str, Any] = {"key": "password", "restart": ["deployment/api"], "namespace": "ns"}
    if source == "password_policy":
        rule["password_policy"] = policy
    else:
        rule["generator"] = {"length": 40, "charset": "QVWZ"}
    kind: Rotate | Restore
    params: RotateParams | RestoreParams
    if source == "restore":
        kind = Restore(vault=vault, restart_consumer=consumers, clock=lambda: NOW)
        params = RestoreParams(path=path, to_version=1)
    else:
        kind = Rotate(vault=vault, restart_consumer=consumers, clock=lambda: NOW)
        params = RotateParams(path=path)
    outcome = kind.execute(
        params, target=target(rule), preview=kind.preview(params, target=target(rule))
    )
    assert outcome.facts["version"] == (3 if source == "restore" else 2)
    del old, kept  # the test's own references
    # a control: the search finds a value that something holds, even in a dict of strings only
    held = [{"here": "".join(secrets.choice("GHXY") for _ in range(40))}]

    found = holders_of(
        "(?P<new>[QVWZ]{40})"  # the new value (or the preview's probe of the password policy)
        "|(?P<old>[JKLM]{40})"  # the old value (copied back by a restore)
        "|(?P<kept>[RSTU]{40})"  # the key that keeps its value
        "|(?P<control>[GHXY]{40})"
    )
    assert found == [("dict", "control")]
    del held
