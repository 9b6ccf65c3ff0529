"""Vault auth without a static token (issue 14 item 4), against the real OpenBao dev server:
AppRole through hvac's own auth method, the token renewed before it expires, a new login when it
cannot be renewed (revoked, or at its max TTL), and Kubernetes auth against a TokenReview API.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from actions.backends.vault import VaultBackend
from actions.backends.vault_auth import AppRoleLogin, KubernetesLogin
from bot.settings import Settings
from tests.fakes.openbao import OpenBao
from tests.helpers.tools import missing_tool


def approle(openbao: OpenBao, *, ttl: str, max_ttl: str) -> tuple[AppRoleLogin, str]:
    """A new AppRole mount and role whose tokens may read ``secret/<path>``; returns the login
    and that path (a KV v2 secret written with the root token)."""
    client = openbao.client()
    mount, path = f"approle-{uuid.uuid4().hex[:8]}", f"deploy/{uuid.uuid4().hex[:8]}"
    client.sys.enable_auth_method("approle", path=mount)
    client.secrets.kv.v2.create_or_update_secret(path=path, secret={"password": "s3cret"})
    client.sys.create_or_update_policy(
        name=f"read-{mount}", policy=f'path "secret/metadata/{path}" {{ capabilities = ["read"] }}'
    )
    client.write(
        f"auth/{mount}/role/opsgate",
        token_policies=[f"read-{mount}"],
        token_ttl=ttl,
        token_max_ttl=max_ttl,
    )
    role_id = client.read(f"auth/{mount}/role/opsgate/role-id")["data"]["role_id"]
    secret_id = client.write(f"auth/{mount}/role/opsgate/secret-id")["data"]["secret_id"]
    return AppRoleLogin(role_id, secret_id, mount=mount), path


def wait_ttl_below(backend: VaultBackend, seconds: float) -> None:
    """Wait (at most 30 s) until the backend's token has less than ``seconds`` left."""
    client = backend._client
    deadline = time.monotonic() + 30
    while client.auth.token.lookup_self()["data"]["ttl"] >= seconds:
        assert time.monotonic() < deadline, "the token's TTL does not go down"
        time.sleep(0.2)


def test_approle_login_renewal_and_a_new_login_at_max_ttl(openbao: OpenBao) -> None:
    login, path = approle(openbao, ttl="6s", max_ttl="9s")
    backend = VaultBackend(url=openbao.url, token=None, login=login, check_interval=1.0)
    keeper = backend.token_keeper
    assert keeper is not None
    try:
        keeper.keep()  # the first login, through hvac's approle method
        assert (keeper.logins, keeper.renewals) == (1, 0)
        assert backend.kv_metadata("secret", path).current_version == 1
        first = backend._client.token
        keeper.keep()  # 6 s left of 6: nothing to do yet
        assert (keeper.logins, keeper.renewals) == (1, 0)
        wait_ttl_below(backend, 3)  # under half its TTL and under three checks: renewed
        keeper.keep()
        assert (keeper.logins, keeper.renewals) == (1, 1)
        assert backend._client.token == first
        wait_ttl_below(backend, 3)  # now the max TTL (9 s) caps it: a new login
        keeper.keep()
        assert keeper.logins == 2
        assert backend._client.token != first
        assert backend.kv_metadata("secret", path).current_version == 1
    finally:
        backend.close()


def test_a_revoked_token_is_replaced_by_a_new_login(openbao: OpenBao) -> None:
    login, path = approle(openbao, ttl="1h", max_ttl="2h")
    backend = VaultBackend(url=openbao.url, token=None, login=login, check_interval=60.0)
    keeper = backend.token_keeper
    assert keeper is not None
    try:
        keeper.keep()
        revoked = backend._client.token
        openbao.client().auth.token.revoke(revoked)
        keeper.keep()
        assert keeper.logins == 2
        assert backend._client.token != revoked
        assert backend.kv_metadata("secret", path).current_version == 1
    finally:
        backend.close()


def test_a_failing_login_is_logged_without_secrets_and_retried(
    openbao: OpenBao, caplog: pytest.LogCaptureFixture
) -> None:
    login, _ = approle(openbao, ttl="1h", max_ttl="2h")
    wrong = AppRoleLogin(login.role_id, "not-the-secret-id", mount=login.mount)
    backend = VaultBackend(url=openbao.url, token=None, login=wrong, check_interval=60.0)
    keeper = backend.token_keeper
    assert keeper is not None
    try:
        with caplog.at_level(logging.ERROR, logger="actions.backends.vault_auth"):
            keeper.keep()  # never raises: the periodic job tries again
        [line] = [r.getMessage() for r in caplog.records]
        assert "could not keep the token alive" in line
        assert "not-the-secret-id" not in caplog.text
        assert login.role_id not in caplog.text
        assert keeper.logins == 0
    finally:
        backend.close()


def test_settings_name_what_an_auth_method_lacks() -> None:
    approle_settings = Settings(VAULT_AUTH="approle", VAULT_ROLE_ID="r", _env_file=None)
    with pytest.raises(ValueError, match="VAULT_ROLE_ID and VAULT_SECRET_ID"):
        approle_settings.vault_login()
    with pytest.raises(ValueError, match="needs VAULT_ROLE"):
        Settings(VAULT_AUTH="kubernetes", _env_file=None).vault_login()
    assert Settings(_env_file=None).vault_login() is None
    login = Settings(VAULT_AUTH="kubernetes", VAULT_ROLE="opsgate", _env_file=None).vault_login()
    assert login == KubernetesLogin("opsgate")
    assert "secret" not in repr(
        Settings(
            VAULT_AUTH="approle", VAULT_ROLE_ID="r", VAULT_SECRET_ID="secret", _env_file=None
        ).vault_login()
    )


# --- Kubernetes auth ---------------------------------------------------------------------------


def service_account_jwt(namespace: str, name: str) -> str:
    """A service account token's shape (claims as the kubelet's projected tokens carry them).
    Its signature is not checked by Vault, which asks the API server's TokenReview instead."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": int(time.time()) + 3600,
        "iat": int(time.time()),
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": "0b4c6a7e-1111-2222-3333-444455556666",
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": "0b4c6a7e-1111-2222-3333-444455556666"},
        },
    }
    signature = base64.urlsafe_b64encode(b"x" * 64).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(claims)}.{signature}"


def ca_certificate(directory: Path) -> str:
    """A self-signed CA certificate (PEM), made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        missing_tool("openssl", "apt-get install openssl")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kubernetes",
         "-days", "1", "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt")],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return (directory / "ca.crt").read_text()


def test_kubernetes_auth_through_the_api_servers_token_review(
    openbao: OpenBao, httpserver: HTTPServer, tmp_path: Path
) -> None:
    """OpenBao's kubernetes auth method asks ``POST /apis/authentication.k8s.io/v1/tokenreviews``
    of the cluster whether the pod's token is valid. The TokenReview API here answers as the API
    server does for a valid service account token (the fake Kubernetes API has none yet)."""
    jwt = service_account_jwt("opsgate", "opsgate")
    reviewed: list[str] = []

    def token_review(request: Request) -> Response:
        body = json.loads(request.get_data())
        reviewed.append(body["spec"]["token"])
        ok = body["spec"]["token"] == jwt
        status: dict[str, Any] = {"authenticated": ok, "audiences": body["spec"].get("audiences")}
        if ok:
            status["user"] = {
                "username": "system:serviceaccount:opsgate:opsgate",
                "uid": "0b4c6a7e-1111-2222-3333-444455556666",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:opsgate"],
            }
        answer = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "status": status,
        }
        return Response(json.dumps(answer), status=201, content_type="application/json")

    httpserver.expect_request(
        "/apis/authentication.k8s.io/v1/tokenreviews", method="POST"
    ).respond_with_handler(token_review)
    client = openbao.client()
    mount = f"kubernetes-{uuid.uuid4().hex[:8]}"
    client.sys.enable_auth_method("kubernetes", path=mount)
    client.write(
        f"auth/{mount}/config",
        kubernetes_host=httpserver.url_for("/").rstrip("/"),
        kubernetes_ca_cert=ca_certificate(tmp_path),  # required; unused over plain http
        disable_local_ca_jwt=True,
        token_reviewer_jwt="reviewer-token",
    )
    client.write(
        f"auth/{mount}/role/opsgate",
        bound_service_account_names=["opsgate"],
        bound_service_account_namespaces=["opsgate"],
        token_policies=["default"],
        token_ttl="1h",
    )
    token_file = tmp_path / "token"
    token_file.write_text(jwt)
    login = KubernetesLogin("opsgate", token_path=str(token_file), mount=mount)
    backend = VaultBackend(url=openbao.url, token=None, login=login, check_interval=60.0)
    keeper = backend.token_keeper
    assert keeper is not None
    try:
        keeper.keep()
        assert reviewed == [jwt]
        assert keeper.logins == 1
        me = backend._client.auth.token.lookup_self()["data"]
        assert me["meta"]["service_account_name"] == "opsgate"
    finally:
        backend.close()
