"""A kubeconfig for one or more started fakes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from .fake import FakeKubernetes


def write_kubeconfig(
    path: str | Path, clusters: Mapping[str, FakeKubernetes], current: str | None = None
) -> Path:
    """Write a kubeconfig with one context (cluster and user of the same name) per entry.

    ``current`` (default: the first key) is the current-context. Every fake must be started.
    """
    if not clusters:
        raise ValueError("write_kubeconfig needs at least one cluster")
    names = list(clusters)
    current = current or names[0]
    if current not in clusters:
        raise ValueError(f"current context {current!r} is not one of {names}")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": n, "cluster": {"server": clusters[n].url}} for n in names],
        "users": [{"name": n, "user": {"token": clusters[n].token}} for n in names],
        "contexts": [
            {"name": n, "context": {"cluster": n, "user": n, "namespace": "default"}} for n in names
        ],
        "current-context": current,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target
