"""Vault authentication without a static token: AppRole or Kubernetes auth through hvac's own
auth methods, the token renewed before it expires and acquired again when renewal fails.

:class:`TokenKeeper` holds the ``hvac.Client`` of :class:`actions.backends.vault.VaultBackend`:
:meth:`TokenKeeper.login` logs in (``auth/<mount>/login``; hvac sets the client's token), and
:meth:`TokenKeeper.keep` (a periodic job, every ``check_interval`` seconds) reads the token's TTL
with ``auth/token/lookup-self`` and renews it (``auth/token/renew-self``) once less than half of
its creation TTL, or less than three check intervals, remain. When the token cannot be renewed
(revoked, expired, or at its ``max_ttl``: the renewed TTL is still under three intervals) it logs
in again. A failure is logged (without any secret) and retried at the next run. No token, role
ID or secret ID is ever logged.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac.exceptions
import requests

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
"""Where Kubernetes mounts the pod's service account token (a projected, rotated file)."""


@dataclass(frozen=True)
class AppRoleLogin:
    """AppRole (``auth/<mount>/login`` with a role ID and a secret ID)."""

    role_id: str
    secret_id: str = field(repr=False)
    mount: str = "approle"

    def login(self, client: Any) -> dict[str, Any]:
        answer: dict[str, Any] = client.auth.approle.login(
            self.role_id, secret_id=self.secret_id, mount_point=self.mount
        )
        return answer


@dataclass(frozen=True)
class KubernetesLogin:
    """Kubernetes auth (``auth/<mount>/login`` with the pod's service account token, read from
    ``token_path`` at each login since the kubelet rotates it)."""

    role: str
    token_path: str = SERVICE_ACCOUNT_TOKEN
    mount: str = "kubernetes"

    def login(self, client: Any) -> dict[str, Any]:
        jwt = Path(self.token_path).read_text().strip()
        answer: dict[str, Any] = client.auth.kubernetes.login(
            self.role, jwt, mount_point=self.mount
        )
        return answer


VaultLogin = AppRoleLogin | KubernetesLogin


class TokenKeeper:
    """Keeps ``client``'s token alive with ``method``; see the module docstring.
    ``check_interval`` is the seconds between two runs of :meth:`keep`."""

    def __init__(self, client: Any, method: VaultLogin, *, check_interval: float = 60.0) -> None:
        self._client = client
        self._method = method
        self._interval = check_interval
        self._lock = threading.Lock()
        self.logins = 0
        self.renewals = 0

    @property
    def method(self) -> str:
        return "approle" if isinstance(self._method, AppRoleLogin) else "kubernetes"

    def login(self) -> float:
        """Log in; returns the new token's TTL (seconds). Raises ``OSError`` (the service
        account token file), ``hvac.exceptions.VaultError`` or ``requests`` errors."""
        with self._lock:
            answer = self._method.login(self._client)
            self.logins += 1
        ttl = float(answer["auth"]["lease_duration"])
        log.info("vault: logged in with %s auth; token TTL %.0f s", self.method, ttl)
        return ttl

    def keep(self) -> None:
        """Renew the token when it is due, or log in again; never raises (logs why)."""
        try:
            self._keep()
        except (OSError, hvac.exceptions.VaultError, requests.exceptions.RequestException) as e:
            log.error(
                "vault: could not keep the token alive (%s: %s); trying again in %.0f s",
                type(e).__name__,
                _safe(e),
                self._interval,
            )

    def _keep(self) -> None:
        if not self._client.token:
            self.login()
            return
        try:
            data = self._client.auth.token.lookup_self()["data"]
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            log.warning("vault: the token is no longer valid; logging in again")
            self.login()
            return
        ttl, creation_ttl = float(data.get("ttl") or 0), float(data.get("creation_ttl") or 0)
        soon = 3 * self._interval
        if ttl > max(soon, creation_ttl / 2):
            return
        if not data.get("renewable"):
            self.login()
            return
        try:
            renewed = self._client.auth.token.renew_self()
        except hvac.exceptions.VaultError as exc:
            log.warning("vault: renewal failed (%s); logging in again", type(exc).__name__)
            self.login()
            return
        self.renewals += 1
        new_ttl = float(renewed["auth"]["lease_duration"])
        if new_ttl <= soon:  # at its max_ttl: it cannot outlive the next checks
            log.info(
                "vault: the token reached its max TTL (%.0f s left); logging in again", new_ttl
            )
            self.login()
            return
        log.info("vault: token renewed; TTL %.0f s", new_ttl)


def _safe(exc: BaseException) -> str:
    """What an error says, cut short: hvac's messages hold Vault's errors, never the token."""
    return str(exc).splitlines()[0][:200] if str(exc) else ""
