"""The request kinds opsgate executes, by command word."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime

from actions.access import Access
from actions.base import ActionKind, Target
from actions.errors import Invalid
from actions.kube import KubernetesPort
from actions.restart import Restart, RestartParams
from actions.rollback import Rollback
from actions.rotate import ConsumerCheck, RestartConsumer, Restore, Rotate
from actions.scale import Scale
from actions.vault import VaultPort
from actions.workloads import parse_workload


def _restart_request(
    workload: str, namespace: str, kube_context: str | None
) -> tuple[RestartParams, Target]:
    """The ``/ops restart`` request for one of a secret's consumers (``kind/name`` or a bare
    name). Raises Invalid for a reference that does not parse."""
    try:
        kind, name = parse_workload(workload)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    params = RestartParams(name=name, kind=kind, namespace=namespace)
    return params, Target(environment="", kube_context=kube_context, namespace=namespace)


def consumer_restarter(restart: Restart) -> RestartConsumer:
    """A secret's consumers are restarted by the ``restart`` kind itself: the same checks (a
    paused Deployment is refused) and the same rollout following as ``/ops restart``."""

    def restart_consumer(namespace: str, workload: str, kube_context: str | None) -> str:
        params, target = _restart_request(workload, namespace, kube_context)
        preview = restart.preview(params, target=target)
        return restart.follow(restart.execute(params, target=target, preview=preview)).summary

    return restart_consumer


def consumer_checker(restart: Restart) -> ConsumerCheck:
    """A secret's consumers are checked, before anyone is asked, by the ``restart`` kind's own
    preview: the workload must exist (NotFound) and be restartable (Invalid: ambiguous name,
    unknown kind, paused Deployment). Returns the resolved ``kind/name``."""

    def check_consumer(namespace: str, workload: str, kube_context: str | None) -> str:
        params, target = _restart_request(workload, namespace, kube_context)
        return restart.preview(params, target=target).target

    return check_consumer


def build_registry(
    *,
    kube: KubernetesPort,
    clock: Callable[[], datetime],
    vault: VaultPort | None = None,
    restart_consumer: RestartConsumer | None = None,
    rollout_timeout: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
    poll_interval: float = 2.0,
) -> Mapping[str, ActionKind]:
    """Every request kind, ready to use, keyed by its ``name``.

    ``rotate`` and ``restore`` are there only when a ``vault`` adapter is given;
    ``restart_consumer`` restarts a secret's consumers (default: :func:`consumer_restarter`,
    the ``restart`` kind itself). ``rollout_timeout`` (seconds) bounds how long restart, scale and
    rollback follow their rollout, polled every ``poll_interval`` seconds with ``sleep``.
    """
    t, z, p = rollout_timeout, sleep, poll_interval
    restart = Restart(kube=kube, clock=clock, rollout_timeout=t, sleep=z, poll_interval=p)
    kinds: list[ActionKind] = [
        restart,
        Scale(kube=kube, clock=clock, rollout_timeout=t, sleep=z, poll_interval=p),
        Rollback(kube=kube, clock=clock, rollout_timeout=t, sleep=z, poll_interval=p),
        Access(kube=kube, vault=vault, clock=clock),
    ]
    if vault is not None:
        consumer = restart_consumer or consumer_restarter(restart)
        check = consumer_checker(restart)
        kinds.append(
            Rotate(vault=vault, restart_consumer=consumer, clock=clock, check_consumer=check)
        )
        kinds.append(
            Restore(vault=vault, restart_consumer=consumer, clock=clock, check_consumer=check)
        )
    return {kind.name: kind for kind in kinds}
