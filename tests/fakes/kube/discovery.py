"""Discovery documents (``/version``, ``/api``, ``/apis``... from the registered types) and the
routing of a resource path to its type, namespace, name and subresource."""

from __future__ import annotations

from dataclasses import dataclass

from .registry import SERVER_VERSION, SUBRESOURCE_VERBS, Obj, ResourceType, hooks


@dataclass
class Route:
    """A resource path: its type, namespace, name and subresource (when given)."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def _groups(types: list[ResourceType]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for rt in types:
        if rt.group and rt.version not in groups.setdefault(rt.group, []):
            groups[rt.group].append(rt.version)
    return groups


def discover(types: list[ResourceType], path: str) -> Obj | None:
    groups = _groups(types)
    if path == "/version":
        return dict(SERVER_VERSION)
    if path == "/api":
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}
            ],
        }
    if path == "/api/v1":
        return resource_list(types, "", "v1")
    if path == "/apis":
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [_api_group(g, versions) for g, versions in groups.items()],
        }
    parts = path.split("/")[1:]
    if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
        return {"kind": "APIGroup", "apiVersion": "v1"} | _api_group(parts[1], groups[parts[1]])
    if len(parts) == 3 and parts[0] == "apis" and parts[2] in groups.get(parts[1], []):
        return resource_list(types, parts[1], parts[2])
    return None


def resource_list(types: list[ResourceType], group: str, version: str) -> Obj:
    resources: list[Obj] = []
    for rt in types:
        if (rt.group, rt.version) != (group, version):
            continue
        entry: Obj = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        resources.append(entry)
        for sub in rt.subresources:
            sub_entry: Obj = {"name": f"{rt.plural}/{sub}", "singularName": ""}
            sub_entry["namespaced"] = rt.namespaced
            if sub == "scale":
                sub_entry |= {"group": "autoscaling", "version": "v1", "kind": "Scale"}
            else:
                sub_entry["kind"] = rt.kind
            read_only = sub in hooks(rt).readers  # e.g. pods/log: GET only
            sub_entry["verbs"] = ["get"] if read_only else list(SUBRESOURCE_VERBS)
            resources.append(sub_entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def find_route(types: list[ResourceType], path: str) -> Route | None:
    parts = path.split("/")[1:]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    by_plural = {rt.plural: rt for rt in types if (rt.group, rt.version) == (group, version)}
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in by_plural:
        namespace, rest = rest[1], rest[2:]
    if not rest or rest[0] not in by_plural or len(rest) > 3:
        return None
    rt = by_plural[rest[0]]
    if namespace is not None and not rt.namespaced:
        return None
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if subresource is not None and subresource not in rt.subresources:
        return None
    return Route(rt, namespace, name, subresource)


def _api_group(group: str, versions: list[str]) -> Obj:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}
