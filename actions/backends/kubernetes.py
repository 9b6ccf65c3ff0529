"""The Kubernetes adapter: the only module that imports the official ``kubernetes`` client.

Objects come back as the API server's JSON (plain dicts with camelCase keys, as ``kubectl get -o
json`` shows them). Every client exception is turned into an :mod:`actions.errors` error, chained
with ``raise … from e``; no ``ApiException`` or ``urllib3`` error leaves this module.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from actions.backends.kube_search import WorkloadSearch
from actions.errors import (
    ActionError,
    Conflict,
    Forbidden,
    Invalid,
    MaybeApplied,
    NotFound,
    PermanentError,
    TemporaryError,
)
from actions.metrics import counted

KUBE = "kubernetes"
"""The ``backend`` label of this adapter's errors (:data:`actions.metrics.BACKEND_ERRORS`)."""

WORKLOAD_KINDS: dict[str, str] = {
    "Deployment": "deployment",
    "StatefulSet": "stateful_set",
    "DaemonSet": "daemon_set",
}
"""apps/v1 workload kinds and the suffix of their ``AppsV1Api`` methods."""

SCALABLE_KINDS: dict[str, str] = {"Deployment": "deployment", "StatefulSet": "stateful_set"}
"""apps/v1 kinds with a ``scale`` subresource that opsgate scales."""

REFRESH_HOOK_INTERVAL = 10.0
"""Seconds between two runs of the client's token refresh hook (see :func:`_at_most_every`)."""

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def _at_most_every(seconds: float, hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """``hook`` (the ``refresh_api_key_hook`` that ``load_kube_config``/``load_incluster_config``
    install), run at most once every ``seconds``.

    The client runs that hook before every request. It reloads a token only when it is about to
    expire (within 5 minutes for a kubeconfig token, once a minute for the in-cluster token file),
    but it also assigns ``host`` again each time, which makes the client re-read every proxy
    variable of the environment: a third of the CPU a DELETE costs, which revoking 1,000 grants
    at once pays 1,000 times. Running it every ``seconds`` (far less than those windows) still
    refreshes every token before it expires. The hook installs a new hook each time it runs;
    that one is wrapped in turn.
    """
    lock = threading.Lock()
    state: dict[str, Any] = {"hook": hook, "last": None}

    def throttled(configuration: Any) -> None:
        with lock:
            now = time.monotonic()
            if state["last"] is not None and now - state["last"] < seconds:
                return
            state["hook"](configuration)
            state["last"] = now
            installed = configuration.refresh_api_key_hook
            if installed is not throttled and installed is not None:
                state["hook"] = installed
                configuration.refresh_api_key_hook = throttled

    return throttled


class KubernetesBackend(WorkloadSearch):
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
        if configuration.refresh_api_key_hook is not None:
            configuration.refresh_api_key_hook = _at_most_every(
                REFRESH_HOOK_INTERVAL, configuration.refresh_api_key_hook
            )
        return client.ApiClient(configuration)

    @contextmanager
    def _translated(self, what: str, context: str | None, *, write: bool = False) -> Iterator[None]:
        """Turn client exceptions raised inside the block into :mod:`actions.errors` errors.

        ``write``: the block changes something. Then a request that may have reached the API
        server without an answer (read timeout, connection dropped after sending, a 504) is
        ``MaybeApplied`` rather than ``TemporaryError``.
        """
        try:
            yield
        except ApiException as exc:
            if write and exc.status == 504:
                raise counted(KUBE, MaybeApplied(str(translate_api_exception(exc, what)))) from exc
            raise counted(KUBE, translate_api_exception(exc, what)) from exc
        except urllib3.exceptions.HTTPError as exc:
            where = f"context '{context}'" if context else "the current context"
            cause = _urllib3_cause(exc)
            text = f"the Kubernetes API ({where}) did not answer while {what}: {cause}"
            if write and _may_have_been_received(exc):
                raise counted(KUBE, MaybeApplied(text)) from exc
            raise counted(KUBE, TemporaryError(text, delay=5.0)) from exc

    def _call(
        self,
        context: str | None,
        what: str,
        method: Callable[..., Any],
        *args: Any,
        write: bool = False,
        **kw: Any,
    ) -> dict[str, Any]:
        with self._translated(what, context, write=write):
            return self._raw_call(method, *args, **kw)

    def _raw_call(self, method: Callable[..., Any], *args: Any, **kw: Any) -> dict[str, Any]:
        timeout = kw.pop("_request_timeout", None) or self._timeout
        response = method(*args, _preload_content=False, _request_timeout=timeout, **kw)
        data: dict[str, Any] = json.loads(response.data)
        return data

    def _apps(self, context: str | None) -> Any:
        return client.AppsV1Api(self._api_client(context))

    def _rbac(self, context: str | None) -> Any:
        return client.RbacAuthorizationV1Api(self._api_client(context))

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

        Returns the object as the server stored it. ``dry_run`` sends ``dryRun=All``. Raises
        ``MaybeApplied`` when the PATCH was sent without an answer (not for a dry run).
        """
        return self._patch(context, kind, namespace, name, patch, STRATEGIC_MERGE, dry_run)

    def json_patch_workload(
        self,
        context: str | None,
        kind: str,
        namespace: str,
        name: str,
        operations: list[dict[str, Any]],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """JSON patch (RFC 6902) of a workload, as ``kubectl rollout undo`` sends one.

        Returns the object as the server stored it. ``dry_run`` sends ``dryRun=All``. A failed
        ``test`` operation is ``Invalid`` (422); ``MaybeApplied`` as :meth:`patch_workload`.
        """
        return self._patch(context, kind, namespace, name, operations, JSON_PATCH, dry_run)

    def _patch(
        self,
        context: str | None,
        kind: str,
        namespace: str,
        name: str,
        body: dict[str, Any] | list[dict[str, Any]],
        content_type: str,
        dry_run: bool,
    ) -> dict[str, Any]:
        """PATCH a workload with ``body`` of ``content_type``; ``dry_run`` sends ``dryRun=All``."""
        suffix = _suffix(kind)
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        return self._call(
            context,
            f"patching {kind.lower()}/{name} in {namespace}",
            getattr(self._apps(context), f"patch_namespaced_{suffix}"),
            name,
            namespace,
            body,
            write=not dry_run,
            _content_type=content_type,
            **extra,
        )

    # -- the scale subresource (autoscaling/v1 Scale)

    def get_scale(
        self, context: str | None, kind: str, namespace: str, name: str
    ) -> dict[str, Any]:
        """GET the ``scale`` subresource of a Deployment or StatefulSet (an autoscaling/v1
        ``Scale``: ``spec.replicas``, ``status.replicas``, ``status.selector``).

        Raises ``Invalid`` for a kind without one (DaemonSet), ``NotFound`` and the others.
        """
        suffix = _scale_suffix(kind)
        return self._call(
            context,
            f"reading the scale of {kind.lower()}/{name} in {namespace}",
            getattr(self._apps(context), f"read_namespaced_{suffix}_scale"),
            name,
            namespace,
        )

    def patch_scale(
        self,
        context: str | None,
        kind: str,
        namespace: str,
        name: str,
        replicas: int,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Set ``spec.replicas`` through the ``scale`` subresource with the merge patch
        ``{"spec": {"replicas": N}}`` that ``kubectl scale`` sends. Returns the new ``Scale``.

        ``dry_run`` sends ``dryRun=All``. Raises ``Invalid`` (422), ``MaybeApplied`` when the
        PATCH was sent without an answer (not for a dry run), and the others.
        """
        suffix = _scale_suffix(kind)
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        return self._call(
            context,
            f"scaling {kind.lower()}/{name} in {namespace}",
            getattr(self._apps(context), f"patch_namespaced_{suffix}_scale"),
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            write=not dry_run,
            _content_type=MERGE_PATCH,
            **extra,
        )

    # -- lists

    def list_replica_sets(
        self, context: str | None, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        """The ReplicaSets in ``namespace`` matching ``label_selector`` (``app=web,tier=x``).

        Items are the API server's JSON (without ``apiVersion``/``kind``, as in a list).
        """
        data = self._call(
            context,
            f"listing replicasets in {namespace}",
            self._apps(context).list_namespaced_replica_set,
            namespace,
            label_selector=label_selector,
        )
        return list(data.get("items") or [])

    def list_horizontal_pod_autoscalers(
        self, context: str | None, namespace: str
    ) -> list[dict[str, Any]]:
        """The autoscaling/v2 HorizontalPodAutoscalers in ``namespace``, as JSON."""
        data = self._call(
            context,
            f"listing horizontalpodautoscalers in {namespace}",
            client.AutoscalingV2Api(
                self._api_client(context)
            ).list_namespaced_horizontal_pod_autoscaler,
            namespace,
        )
        return list(data.get("items") or [])

    # -- RBAC (time-bound access)

    def review_token(self, context: str | None, token: str) -> dict[str, Any]:
        """Create a TokenReview (``authentication.k8s.io/v1``) of ``token`` in the cluster of
        ``context``, as a webhook token authenticator does; returns its ``status``
        (``authenticated``, ``user.username``, ``error``). Raises ``actions.errors.ActionError``
        when the API server cannot be asked."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        api = client.AuthenticationV1Api(self._api_client(context))
        answer = self._call(context, "reviewing a token", api.create_token_review, body)
        status: dict[str, Any] = answer.get("status") or {}
        return status

    def get_cluster_role(self, context: str | None, name: str) -> dict[str, Any]:
        """GET a ClusterRole as JSON. Raises ``NotFound`` when it does not exist."""
        return self._call(
            context,
            f"reading clusterrole/{name}",
            self._rbac(context).read_cluster_role,
            name,
        )

    def apply_role_binding(
        self, context: str | None, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create the RoleBinding ``body`` in ``namespace``; if one of that name exists, replace
        it (its ``roleRef`` is immutable, so one with another ``roleRef`` is deleted and created
        again). Returns the RoleBinding as stored. Raises ``MaybeApplied`` when a write was sent
        without an answer.
        """
        name = body.get("metadata", {}).get("name", "")
        what = f"creating rolebinding/{name} in {namespace}"
        api = self._rbac(context)
        with self._translated(what, context, write=True):
            try:
                return self._raw_call(api.create_namespaced_role_binding, namespace, body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            existing = self._raw_call(api.read_namespaced_role_binding, name, namespace)
            if existing.get("roleRef") != body.get("roleRef"):
                self._raw_call(api.delete_namespaced_role_binding, name, namespace)
                return self._raw_call(api.create_namespaced_role_binding, namespace, body)
            replacement = json.loads(json.dumps(body))
            replacement.setdefault("metadata", {})["resourceVersion"] = existing["metadata"][
                "resourceVersion"
            ]
            return self._raw_call(api.replace_namespaced_role_binding, name, namespace, replacement)

    def get_role_binding(self, context: str | None, namespace: str, name: str) -> dict[str, Any]:
        """GET a RoleBinding as JSON. Raises ``NotFound`` when it does not exist."""
        return self._call(
            context,
            f"reading rolebinding/{name} in {namespace}",
            self._rbac(context).read_namespaced_role_binding,
            name,
            namespace,
        )

    def delete_role_binding(self, context: str | None, namespace: str, name: str) -> bool:
        """DELETE a RoleBinding; True if it was deleted, False if it was already gone."""
        try:
            self._call(
                context,
                f"deleting rolebinding/{name} in {namespace}",
                self._rbac(context).delete_namespaced_role_binding,
                name,
                namespace,
            )
        except NotFound:
            return False
        return True

    def delete_role_bindings(
        self, context: str | None, namespace: str, label_selector: str
    ) -> list[str]:
        """DELETE the RoleBindings of ``namespace`` matching ``label_selector`` in one request
        (``deletecollection``, which the API server answers with the list of what it deleted);
        returns their names, none for a ``Status`` answer. A request sent without an answer
        raises ``MaybeApplied``."""
        data = self._call(
            context,
            f"deleting rolebindings ({label_selector}) in {namespace}",
            self._rbac(context).delete_collection_namespaced_role_binding,
            namespace,
            label_selector=label_selector,
            write=True,
        )
        items = data.get("items") if data.get("kind") != "Status" else None
        return [str(item.get("metadata", {}).get("name", "")) for item in items or []]

    def list_role_bindings(
        self, context: str | None, namespace: str | None, label_selector: str
    ) -> list[dict[str, Any]]:
        """RoleBindings matching ``label_selector`` in ``namespace`` (None: all namespaces)."""
        api = self._rbac(context)
        if namespace is None:
            data = self._call(
                context,
                "listing rolebindings in all namespaces",
                api.list_role_binding_for_all_namespaces,
                label_selector=label_selector,
            )
        else:
            data = self._call(
                context,
                f"listing rolebindings in {namespace}",
                api.list_namespaced_role_binding,
                namespace,
                label_selector=label_selector,
            )
        return list(data.get("items") or [])

    # -- batch/v1 Jobs and pod logs: actions.runbook.JobsPort (runbooks)

    def create_job(
        self, context: str | None, namespace: str, body: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """POST a batch/v1 Job in ``namespace``; returns it as stored. ``dry_run`` sends
        ``dryRun=All`` (the API server validates and defaults it, stores nothing). Raises
        ``Invalid`` (422, the API server's message), ``Conflict`` when one of that name exists,
        ``MaybeApplied`` when the POST was sent without an answer (not for a dry run)."""
        name = body.get("metadata", {}).get("name") or body.get("metadata", {}).get(
            "generateName", ""
        )
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        return self._call(
            context,
            f"creating job/{name} in {namespace}",
            client.BatchV1Api(self._api_client(context)).create_namespaced_job,
            namespace,
            body,
            write=not dry_run,
            **extra,
        )

    def get_job(self, context: str | None, namespace: str, name: str) -> dict[str, Any]:
        """GET a batch/v1 Job as JSON. Raises ``NotFound`` when it does not exist."""
        return self._call(
            context,
            f"reading job/{name} in {namespace}",
            client.BatchV1Api(self._api_client(context)).read_namespaced_job,
            name,
            namespace,
        )

    def list_pods(
        self, context: str | None, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        """The Pods in ``namespace`` matching ``label_selector``, as JSON."""
        data = self._call(
            context,
            f"listing pods ({label_selector}) in {namespace}",
            client.CoreV1Api(self._api_client(context)).list_namespaced_pod,
            namespace,
            label_selector=label_selector,
        )
        return list(data.get("items") or [])

    def read_pod_log(
        self, context: str | None, namespace: str, name: str, *, tail_lines: int, limit_bytes: int
    ) -> str:
        """``GET .../pods/{name}/log?tailLines=N&limitBytes=B``, as ``kubectl logs --tail N
        --limit-bytes B`` asks: the last ``tail_lines`` lines, cut by the API server after
        ``limit_bytes`` bytes. Decoded as UTF-8 (an invalid byte becomes U+FFFD)."""
        with self._translated(f"reading the log of pod/{name} in {namespace}", context):
            response: Any = client.CoreV1Api(self._api_client(context)).read_namespaced_pod_log(
                name,
                namespace,
                tail_lines=tail_lines,
                limit_bytes=limit_bytes,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            data: bytes = response.data
        return data.decode("utf-8", errors="replace")


def _scale_suffix(kind: str) -> str:
    try:
        return SCALABLE_KINDS[kind]
    except KeyError:
        raise Invalid(
            f"{kind} has no scale subresource; only Deployments and StatefulSets scale"
        ) from None


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
    if isinstance(reason, urllib3.exceptions.ProtocolError) or isinstance(
        exc, urllib3.exceptions.ProtocolError
    ):
        return "the connection dropped before an answer"
    return str(reason or exc)


def _may_have_been_received(exc: BaseException) -> bool:
    """True when the request was sent and its answer did not come: a read timeout, or the
    connection dropped after sending (urllib3's ``ProtocolError``). A connect timeout, a refused
    connection or a TLS failure means nothing was sent. A ``MaxRetryError`` is judged by its
    ``reason``."""
    reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    return isinstance(
        reason, (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError)
    )


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
