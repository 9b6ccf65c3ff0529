"""The request kinds opsgate executes, by command word."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from actions.base import ActionKind
from actions.kube import KubernetesPort
from actions.restart import Restart


def build_registry(
    *, kube: KubernetesPort, clock: Callable[[], datetime]
) -> Mapping[str, ActionKind]:
    """Every request kind, ready to use, keyed by its ``name``."""
    kinds: list[ActionKind] = [Restart(kube=kube, clock=clock)]
    return {kind.name: kind for kind in kinds}
