"""The Kubernetes adapter: the only module that imports the official ``kubernetes`` client.

Objects come back as the API server's JSON (plain dicts with camelCase keys, as ``kubectl get -o
json`` shows them). Every client exception is turned into an :mod:`actions.errors` error, chained
with ``raise … from e``; no ``ApiException`` or ``urllib3`` error leaves this module.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from actions.errors import (
    ActionError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PermanentError,
    TemporaryError,
)

WORKLOAD_KINDS: dict[str, str] = {
    "Deployment": "deployment",
    "StatefulSet": "stateful_set",
    "DaemonSet": "daemon_set",
}
"""apps/v1 workload kinds and the suffix of their ``AppsV1Api`` methods."""

STRATEGIC_MERGE = "application/strategic-merge-patch+json"


class KubernetesBackend:
    """Reads and patches apps/v1 workloads in the cluster of a kubeconfig context.

    ``kubeconfig`` is the path of a kubeconfig file (``KUBECONFIG``); without one, the default
    ``~/.kube/config`` is used if it exists, else the in-cluster service account.
    ``request_timeout`` is in seconds, per API call. One ``ApiClient`` is kept per context; call
    :meth:`close` at the end.
    """

    def __init__(self, *, kubeconfig: str | None, request_timeout: float = 10.0) -> None:
        self._kubeconfig = kubeconfig
        self._timeout = request_timeout
        self._clients: dict[str | None, Any] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            for api_client in self._clients.values():
                api_client.close()
            self._clients.clear()

    def _api_client(self, context: str | None) -> Any:
        with self._lock:
            if context not in self._clients:
                self._clients[context] = self._new_client(context)
            return self._clients[context]

    def _new_client(self, context: str | None) -> Any:
        configuration = client.Configuration()
        path = self._kubeconfig or os.path.expanduser(config.KUBE_CONFIG_DEFAULT_LOCATION)
        try:
            if self._kubeconfig or os.path.exists(path):
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=path, context=context, client_configuration=configuration
                )
            else:
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
        except ConfigException as exc:
            where = f"context '{context}'" if context else "the current context"
            raise PermanentError(
                f"cannot use {where} of the kubeconfig ({path}): {exc}; check KUBECONFIG and "
                "the environment's kube_context in the policy"
            ) from exc
        # Retry a refused connection twice; never re-send a request that may have been received.
        configuration.retries = urllib3.Retry(
            total=2, connect=2, read=0, status=0, other=0, redirect=0, backoff_factor=0.2
        )
        return client.ApiClient(configuration)

    @contextmanager
    def _translated(self, what: str, context: str | None) -> Iterator[None]:
        """Turn client exceptions raised inside the block into :mod:`actions.errors` errors."""
        try:
            yield
        except ApiException as exc:
            raise translate_api_exception(exc, what) from exc
        except urllib3.exceptions.HTTPError as exc:
            where = f"context '{context}'" if context else "the current context"
            raise TemporaryError(
                f"the Kubernetes API ({where}) did not answer while {what}: {_urllib3_cause(exc)}",
                delay=5.0,
            ) from exc

    def _call(
        self, context: str | None, what: str, method: Callable[..., Any], *args: Any, **kw: Any
    ) -> dict[str, Any]:
        with self._translated(what, context):
            response = method(*args, _preload_content=False, _request_timeout=self._timeout, **kw)
            data: dict[str, Any] = json.loads(response.data)
            return data

    def _apps(self, context: str | None) -> Any:
        return client.AppsV1Api(self._api_client(context))

    def get_workload(
        self, context: str | None, kind: str, namespace: str, name: str
    ) -> dict[str, Any]:
        """GET one Deployment, StatefulSet or DaemonSet as JSON. Raises NotFound and the others."""
        suffix = _suffix(kind)
        api = self._apps(context)
        return self._call(
            context,
            f"reading {kind.lower()}/{name} in {namespace}",
            getattr(api, f"read_namespaced_{suffix}"),
            name,
            namespace,
        )

    def patch_workload(
        self,
        context: str | None,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Strategic-merge PATCH of a workload (as ``kubectl patch`` does by default).

        Returns the object as the server stored it. ``dry_run`` sends ``dryRun=All``.
        """
        suffix = _suffix(kind)
        api = self._apps(context)
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        return self._call(
            context,
            f"patching {kind.lower()}/{name} in {namespace}",
            getattr(api, f"patch_namespaced_{suffix}"),
            name,
            namespace,
            patch,
            _content_type=STRATEGIC_MERGE,
            **extra,
        )


def _suffix(kind: str) -> str:
    try:
        return WORKLOAD_KINDS[kind]
    except KeyError:
        raise Invalid(f"{kind} is not a workload kind opsgate handles") from None


def _urllib3_cause(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError) or isinstance(
        reason, urllib3.exceptions.ReadTimeoutError
    ):
        return "timed out waiting for an answer"
    if isinstance(reason, urllib3.exceptions.NewConnectionError) or isinstance(
        exc, urllib3.exceptions.NewConnectionError
    ):
        return "connection refused or unreachable"
    return str(reason or exc)


def translate_api_exception(exc: ApiException, what: str) -> ActionError:
    """Map an ``ApiException`` to opsgate's errors, keeping the API server's own message."""
    message = exc.reason or "error"
    try:
        body = json.loads(exc.body) if exc.body else {}
        if isinstance(body, dict) and body.get("message"):
            message = body["message"]
    except (TypeError, ValueError):
        pass
    status = exc.status or 0
    text = f"Kubernetes answered {status} while {what}: {message}"
    if status == 404:
        return NotFound(text)
    if status in (401, 403):
        return Forbidden(text)
    if status == 409:
        return Conflict(text)
    if status in (400, 415, 422):
        return Invalid(text)
    if status == 429 or status >= 500:
        return TemporaryError(text, delay=5.0)
    return PermanentError(text)
