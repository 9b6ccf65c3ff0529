"""A fake Kubernetes API server for tests (a package: import everything from here).

A real HTTP server on ``127.0.0.1`` (plain http, bearer token) that the official ``kubernetes``
Python client and the real ``kubectl`` accept unmodified through a kubeconfig. It serves the
storage layer of the API server, plus deterministic stand-ins for the Deployment, StatefulSet and
DaemonSet controllers (``Controllers``: ReplicaSets with revisions, status that moves one step per
read until the rollout completes, ``fake.stall`` for ProgressDeadlineExceeded), enough for
``kubectl rollout status|history|undo`` and ``kubectl scale``. ``FakeKubernetes(controllers=False)``
is the storage layer alone: nothing reacts to a change.

Served paths::

    /version, /api, /api/v1, /apis, /apis/<group>, /apis/<group>/<version>   discovery (legacy)
    /api/v1/..., /apis/<group>/<version>/...   GET (one, list), POST, PUT, PATCH, DELETE
    .../<name>/status, .../<name>/scale        subresources, where registered
    anything else (``/openapi/v2``, ``/openapi/v3``...)   404 with a ``Status`` body

Behaviour that matches a real API server: server-set ``uid``, ``creationTimestamp``, a global
monotonic ``resourceVersion``, ``generation`` bumped on spec changes only, ``Status`` error bodies
(NotFound, AlreadyExists, Conflict, Invalid, UnsupportedMediaType, InternalError...), optimistic
concurrency on PUT and PATCH, JSON patch (RFC 6902), merge patch (RFC 7386) and strategic merge
patch, ``?dryRun=All``, ``null`` fields dropped as decoding into Go types does, an immutable
RoleBinding ``roleRef``, ``labelSelector`` and ``fieldSelector`` on lists, ``meta.k8s.io/v1``
``Table`` answers for ``kubectl get``, no-op updates that keep the ``resourceVersion``.
``deletecollection`` (``DELETE`` on a collection, with selectors) answers the list of what it
deleted. Not served: watch (answers an empty stream that ends after ``timeoutSeconds``, at most
5 s), server-side apply, protobuf, aggregated discovery (clients fall back to the
legacy documents), pagination (``limit`` is ignored: every list is complete).

Authentication: a request with a wrong ``Authorization`` header gets 401, but one without any is
let in, because kubectl (client-go's clientcmd) sends no credentials at all to a plain-http server;
the Python client does send the kubeconfig's token.

Python API::

    with FakeKubernetes(token="fake-token") as fake:        # or fake.start() ... fake.stop()
        fake.url                                            # "http://127.0.0.1:PORT"
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"staging": fake, "prod": other})
        fake.add(deployment("web", "shop", replicas=3))     # seed (or replace); fills server fields
        fake.get_object("apps/v1", "Deployment", "shop", "web")   # deep copy, or None
        fake.objects("Deployment")                          # deep copies, by namespace/name
        fake.requests              # list[RecordedRequest] (a copy); header names lower-cased
        fake.requests_matching(method="PATCH", path_contains="/deployments/web")
        fake.clear_requests()
        fake.fail_next(count=1, status=500, method=None, path_contains=None,
                       reason="InternalError", message="...")
        fake.hang_next(seconds, count=1, method=None, path_contains=None)   # wait, then serve
        fake.answer_late_next(seconds, count=1, method=None, path_contains=None,
                              apply=True, drop=False, then=None)   # serve, then wait
        fake.store                 # the ObjectStore, for what the helpers above do not cover
        fake.controllers.steps = 3                          # reads until a rollout completes
        fake.stall(namespace, name, kind="Deployment", after_reads=1)   # never completes;
                                   # Progressing=False/ProgressDeadlineExceeded after N reads
        fake.unstall(namespace, name, kind="Deployment")
        fake.controllers.in_flight("Deployment", namespace, name)       # a rollout under way?

``hang_next`` delays a request before the fake looks at it (after a client timeout the change
still lands, late); ``answer_late_next`` stores the change at once (``apply=False``: never) and
delays only the answer, or with ``drop=True`` closes the connection without one: the client cannot
tell whether its write took effect. ``then`` is called once the change is stored (or skipped),
before the wait, e.g. ``then=lambda: fake.fail_next(3, status=503, method="GET")``.

Note for timeout tests: urllib3 (under the Python client) retries a timed-out GET 3 more times by
default, so either hang 4 requests or give the client ``Configuration.retries = False``.

Object builders (plain dicts with a plausible ``status``)::

    deployment(name, namespace, *, replicas=1, image="nginx:1.25", labels=None,
               ready_replicas=None)
    statefulset(name, namespace, *, replicas=1, image="nginx:1.25", labels=None,
                ready_replicas=None)
    daemonset(name, namespace, *, image="nginx:1.25", labels=None, desired=3, ready=None)
    replicaset(name, namespace, *, template, revision, owner=None, replicas=0)
    cluster_role(name, rules=None)
    role_binding(name, namespace, *, cluster_role_name, user, labels=None)
    horizontal_pod_autoscaler(name, namespace, *, target_kind="Deployment", target_name=None,
                              min_replicas=1, max_replicas=10, cpu_utilization=80)

Modules (each imports only those above it)::

    registry      ResourceType, RESOURCE_TYPES, register(), add_reader(), register_controller()
    errors        Status error bodies (ApiError, not_found, conflict, invalid...)
    patch         JSON patch, merge patch, strategic merge patch
    selectors     labelSelector and fieldSelector
    times         timestamps and kubectl's age format
    validation    what is checked and normalized before storing (dry runs too)
    store         ObjectStore: server fields, optimistic concurrency, DELETE answers
    tables        the Scale and Table views (kubectl get)
    core, apps, rbac, autoscaling, batch   resource modules: types, builders, columns, hooks
                  (batch: Jobs, their controller, pods/log)
    rollout       Controllers: rollouts, ReplicaSets, revision history
    discovery     discovery documents and the routing of resource paths
    server        the HTTP server and handler, RecordedRequest, fault rules
    fake          FakeKubernetes
    kubeconfig    write_kubeconfig

Adding a resource (batch/v1 Jobs, say) is one new module that registers its types, imported
below with the other resource modules (or from the module that needs it, before the
``FakeKubernetes`` is created)::

    from tests.fakes.kube.registry import (
        ResourceType, Table, add_reader, register, register_controller,
    )

    JOBS = register(
        ResourceType("batch", "v1", "jobs", "Job", True, (), ("status",)),
        table=Table(columns, cells),           # kubectl get columns; default NAME, AGE
        defaults=fill_job_defaults,            # on create: obj -> None, mutates obj
        on_update=refuse_template_changes,     # (rt, name, new, current), raises ApiError
    )
    add_reader("", "pods", "log", read_log)    # a subresource of a type registered elsewhere

    @register_controller                       # called (store, types) per FakeKubernetes
    class JobController: ...                   # enabled, seeded(obj), written(rt, ns, name),
                                               # read(rt, ns, name): see registry.Controller

A reader answers ``GET .../<name>/<subresource>`` as ``(status, answer)``; a ``str`` answer is
sent as ``text/plain``. ``FakeKubernetes(extra_types=[...])`` serves a type for a single test
(storage only, no hooks).
"""

from __future__ import annotations

# isort: off
# The resource modules register their types on import, in the order discovery lists them: a
# new resource module gets its import line here.
from . import core
from . import apps
from . import rbac
from . import autoscaling
from . import batch

# isort: on
from .apps import daemonset, deployment, replicaset, statefulset
from .autoscaling import horizontal_pod_autoscaler
from .batch import CONTROLLER_UID, JOB_NAME, JOBS, JobController, job_controller
from .errors import (
    MODIFIED,
    PATCH_TYPES,
    ApiError,
    already_exists,
    bad_request,
    conflict,
    invalid,
    method_not_allowed,
    not_found,
    path_not_found,
    status_body,
    unsupported_media_type,
)
from .fake import FakeKubernetes
from .kubeconfig import write_kubeconfig
from .patch import (
    MERGE_KEYS,
    MERGED_SCALAR_LISTS,
    JsonPatchError,
    MalformedPatchError,
    apply_patch,
    json_equal,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from .rbac import cluster_role, role_binding
from .registry import (
    ALL_VERBS,
    CONTROLLERS,
    JSON,
    MAX_HANG_SECONDS,
    MAX_WATCH_SECONDS,
    RESOURCE_TYPES,
    SERVER_VERSION,
    SUBRESOURCE_VERBS,
    Controller,
    Hooks,
    Obj,
    ResourceType,
    Table,
    add_reader,
    register,
    register_controller,
)
from .rollout import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    POD_TEMPLATE_HASH,
    REVISION,
    REVISION_HISTORY,
    WORKLOAD_PLURALS,
    Controllers,
    pod_template_hash,
)
from .selectors import field_selector_matcher, label_selector_matcher, label_selector_string
from .server import RecordedRequest
from .store import Key, ObjectStore
from .tables import to_scale, to_table
from .times import human_duration, now, parse_rfc3339, rfc3339

__all__ = [
    "ALL_VERBS",
    "CONTROLLERS",
    "CONTROLLER_UID",
    "DESIRED_REPLICAS",
    "JOBS",
    "JOB_NAME",
    "JSON",
    "MAX_HANG_SECONDS",
    "MAX_REPLICAS",
    "MAX_WATCH_SECONDS",
    "MERGED_SCALAR_LISTS",
    "MERGE_KEYS",
    "MODIFIED",
    "PATCH_TYPES",
    "POD_TEMPLATE_HASH",
    "RESOURCE_TYPES",
    "REVISION",
    "REVISION_HISTORY",
    "SERVER_VERSION",
    "SUBRESOURCE_VERBS",
    "WORKLOAD_PLURALS",
    "ApiError",
    "Controller",
    "Controllers",
    "FakeKubernetes",
    "Hooks",
    "JobController",
    "JsonPatchError",
    "Key",
    "MalformedPatchError",
    "Obj",
    "ObjectStore",
    "RecordedRequest",
    "ResourceType",
    "Table",
    "add_reader",
    "already_exists",
    "apply_patch",
    "apps",
    "autoscaling",
    "bad_request",
    "batch",
    "cluster_role",
    "conflict",
    "core",
    "daemonset",
    "deployment",
    "field_selector_matcher",
    "horizontal_pod_autoscaler",
    "human_duration",
    "invalid",
    "job_controller",
    "json_equal",
    "json_patch",
    "label_selector_matcher",
    "label_selector_string",
    "merge_patch",
    "method_not_allowed",
    "not_found",
    "now",
    "parse_rfc3339",
    "path_not_found",
    "pod_template_hash",
    "rbac",
    "register",
    "register_controller",
    "replicaset",
    "rfc3339",
    "role_binding",
    "statefulset",
    "status_body",
    "strategic_merge_patch",
    "to_scale",
    "to_table",
    "unsupported_media_type",
    "write_kubeconfig",
]
