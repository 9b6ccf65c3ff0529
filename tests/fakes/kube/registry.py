"""The registry of served resource types, and the registration point of a resource module.

A resource module (``core``, ``apps``, ``rbac``, ``autoscaling``...) declares its types with
:func:`register`, one call per type, together with what is particular to the type: its ``kubectl
get`` columns (:class:`Table`), the defaults the API server fills in on create, checks on update
(immutable fields), and readers of subresources that answer something else than the object
(``pods/log`` answers text; :func:`add_reader` adds one to a type registered elsewhere). A
controller (something that reacts to writes and reads, as the rollout controllers do) is
registered with :func:`register_controller`. The package's ``__init__`` imports every resource
module, in the order discovery lists them; adding a resource is one new module plus its import
line there. See the package docstring for an example.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .fake import FakeKubernetes
    from .store import ObjectStore

JSON = Any
Obj = dict[str, Any]

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "70d3cc986aa8221cd1dfb1121852688902d3bf53",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T17:59:15Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")
MAX_HANG_SECONDS = 30.0
MAX_WATCH_SECONDS = 5.0


@dataclass(frozen=True)
class ResourceType:
    """One served resource type: everything discovery and storage need to know about it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale"
    returns_deleted_object: bool = False  # DELETE answers the object instead of a Status

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_resource(self) -> str:
        """``deployments.apps`` or ``pods``, as in the API server's messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def verbs(self) -> tuple[str, ...]:
        if self.plural == "namespaces":
            return tuple(v for v in ALL_VERBS if v != "deletecollection")
        return ALL_VERBS


@dataclass(frozen=True)
class Table:
    """The ``kubectl get`` columns of a type (``meta.k8s.io/v1`` column definitions) and the
    cells of one object's row, in the same order."""

    columns: list[Obj]
    cells: Callable[[Obj], list[Any]]


# GET of a subresource that is not the object: (fake, namespace, name, query) -> (HTTP status,
# answer); a ``str`` answer is sent as ``text/plain`` (``pods/log``), anything else as JSON.
SubresourceReader = Callable[
    ["FakeKubernetes", "str | None", str, Mapping[str, str]], "tuple[int, JSON]"
]


@dataclass(frozen=True)
class Hooks:
    """What is particular to one registered type (all optional)."""

    table: Table | None = None  # default: NAME and AGE
    defaults: Callable[[Obj], None] | None = None  # fills API server defaults in on create
    on_update: Callable[[ResourceType, str, Obj, Obj], None] | None = None
    """Called as ``on_update(rt, name, new, current)`` before an update is stored; raises an
    ``ApiError`` (``errors.invalid``) to refuse it, e.g. an immutable field."""
    readers: Mapping[str, SubresourceReader] = field(default_factory=dict)


class Controller(Protocol):
    """What :class:`FakeKubernetes` calls on each registered controller (never on a timer)."""

    enabled: bool

    def seeded(self, obj: Obj) -> None:
        """After ``FakeKubernetes.add`` stored ``obj``."""

    def written(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        """After an HTTP write (not a dry run, not ``/status``) of an object."""

    def read(self, rt: ResourceType, namespace: str | None, name: str | None) -> None:
        """Before answering a read of one object (``name``) or a list (``name`` None)."""

    # Optional, called when a controller has it: ``deleted(rt, namespace, name, propagation)``
    # after an HTTP DELETE of an object (not a dry run), ``propagation`` being the request's
    # ``propagationPolicy`` (query or DeleteOptions; None: not given), for the garbage
    # collection a controller's dependents get (a Job's pods).


ControllerFactory = Callable[["ObjectStore", "list[ResourceType]"], Controller]

RESOURCE_TYPES: list[ResourceType] = []  # in registration order: discovery lists them so
HOOKS: dict[tuple[str, str], Hooks] = {}  # by (group, plural)
CONTROLLERS: list[ControllerFactory] = []


def register(
    rt: ResourceType,
    *,
    table: Table | None = None,
    defaults: Callable[[Obj], None] | None = None,
    on_update: Callable[[ResourceType, str, Obj, Obj], None] | None = None,
    readers: Mapping[str, SubresourceReader] | None = None,
) -> ResourceType:
    """Serve ``rt`` from every ``FakeKubernetes`` created afterwards; returns ``rt``.

    ``readers`` maps a subresource name (which must be in ``rt.subresources``) to its GET
    answer. Raises ``ValueError`` when the type (group and plural) is registered already.
    """
    if any((t.group, t.plural) == (rt.group, rt.plural) for t in RESOURCE_TYPES):
        raise ValueError(f"{rt.group_resource} is registered already")
    unknown = set(readers or {}) - set(rt.subresources)
    if unknown:
        raise ValueError(f"readers for subresources {sorted(unknown)} not in rt.subresources")
    RESOURCE_TYPES.append(rt)
    HOOKS[(rt.group, rt.plural)] = Hooks(table, defaults, on_update, dict(readers or {}))
    return rt


def add_reader(
    group: str, plural: str, subresource: str, reader: SubresourceReader
) -> ResourceType:
    """Give the registered type ``(group, plural)`` a subresource answered by ``reader`` (e.g.
    ``add_reader("", "pods", "log", read_log)`` for ``pods/log``), for every ``FakeKubernetes``
    created afterwards; returns the type as now registered. Raises ``KeyError`` when no such type
    is registered, ``ValueError`` when it has that subresource already."""
    index = next(
        (i for i, t in enumerate(RESOURCE_TYPES) if (t.group, t.plural) == (group, plural)), None
    )
    if index is None:
        raise KeyError(f"no resource type {plural}.{group or 'core'} is registered")
    rt = RESOURCE_TYPES[index]
    if subresource in rt.subresources:
        raise ValueError(f"{rt.group_resource} has a {subresource} subresource already")
    extended = replace(rt, subresources=(*rt.subresources, subresource))
    RESOURCE_TYPES[index] = extended
    old = hooks(rt)
    HOOKS[(group, plural)] = replace(old, readers={**old.readers, subresource: reader})
    return extended


def register_controller(factory: ControllerFactory) -> ControllerFactory:
    """Give every ``FakeKubernetes`` created afterwards a controller ``factory(store, types)``
    (usable as a decorator on the controller class)."""
    CONTROLLERS.append(factory)
    return factory


def hooks(rt: ResourceType) -> Hooks:
    """The hooks registered with ``rt`` (none for a type given as ``extra_types``)."""
    return HOOKS.get((rt.group, rt.plural)) or Hooks()
