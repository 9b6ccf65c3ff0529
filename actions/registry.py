"""The request kinds opsgate executes: :data:`KINDS`, one line per kind, and
:func:`build_registry`, which makes them from the backends (:func:`build_follower`: the reader
of what their requests leave to follow).

Adding a kind touches its module, one line here, and at most one more file:

1. ``actions/<kind>.py``: its params model (pydantic, frozen, ``extra="forbid"``); its rule
   settings (a :class:`actions.spec.RuleSettings` subclass whose fields are the rule's keys,
   with ``problems`` and ``as_settings``) and, if the policy declares things for it at the top
   level, its ``policy_settings``; ``KIND = KindSpec(...)`` (name, ``command`` if the ``/ops``
   word differs, summary, grammar as ``Arg`` tuples, scope, reversible, ``decided_with``,
   ``undo``, ``build``); the class, whose ``name``, ``reversible`` and ``params_model`` are
   ``KIND``'s, with ``preview`` and ``execute``. What it needs of Kubernetes or Vault beyond
   :class:`actions.kube.KubernetesPort` and :class:`actions.vault.VaultPort` is a
   ``runtime_checkable`` Protocol in the same module, found with ``Backends.adapter``.
2. here: ``<kind>.KIND`` in :data:`KINDS` (and its import).
3. at most one more: the adapter that implements that Protocol
   (``actions/backends/kubernetes.py`` or ``actions/backends/vault.py``), when there is one.

A kind whose top-level settings name environments or hold irreversible items, or warrant a
``policy check`` warning, says so through ``RuleSettings.environments_named``, ``irreversible``
and ``warnings``; one whose requests differ in reversibility gives ``reversible_for``; one whose
change is followed otherwise than as a workload's rollout gives ``follows`` and ``follower``
(:func:`build_follower` makes the gate's reader from them); one with a listing command gives
``catalogue`` (``/ops runbooks``). ``actions/runbook.py`` uses them all.

``/ops`` parsing, usage and help (``bot.grammar``), the policy's known actions, reversibility,
rule and top-level settings and their validation (``approvals.policy``) follow from
:data:`KINDS`; ``tests/test_kinds.py`` checks that the new kind round-trips through all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime

from actions import access, restart, restore, rollback, rotate, runbook, scale
from actions.base import ActionKind, RolloutWatch, Target
from actions.errors import Invalid
from actions.kube import KubernetesPort
from actions.restart import Restart, RestartParams
from actions.rollout import RolloutReader, RolloutResult
from actions.secret_kind import ConsumerCheck, RestartConsumer
from actions.spec import Backends, Follower, KindSpec
from actions.vault import VaultPort
from actions.workloads import parse_workload

KINDS: tuple[KindSpec, ...] = (
    restart.KIND,
    scale.KIND,
    rollback.KIND,
    access.KIND,
    rotate.KIND,
    restore.KIND,
    runbook.KIND,
)
"""Every request kind, in the order ``/ops help`` lists them."""

KINDS_BY_NAME: Mapping[str, KindSpec] = {spec.name: spec for spec in KINDS}


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
    """Every request kind of :data:`KINDS` that the backends allow, ready to use, keyed by its
    ``name``.

    ``rotate`` and ``restore`` are there only when a ``vault`` adapter is given;
    ``restart_consumer`` restarts a secret's consumers (default: :func:`consumer_restarter`,
    the ``restart`` kind itself). ``rollout_timeout`` (seconds) bounds how long restart, scale and
    rollback follow their rollout, polled every ``poll_interval`` seconds with ``sleep``.
    """
    restarter = Restart(
        kube=kube,
        clock=clock,
        rollout_timeout=rollout_timeout,
        sleep=sleep,
        poll_interval=poll_interval,
    )
    backends = Backends(
        kube=kube,
        clock=clock,
        vault=vault,
        rollout_timeout=rollout_timeout,
        sleep=sleep,
        poll_interval=poll_interval,
        restart_consumer=restart_consumer or consumer_restarter(restarter),
        check_consumer=consumer_checker(restarter),
    )
    kinds = [spec.build(backends) for spec in KINDS]
    return {kind.name: kind for kind in kinds if kind is not None}


class WatchReader:
    """The gate's reader of what it follows (``approvals.rollouts.RolloutChecker``): a watch of
    a kind's ``KindSpec.follows`` (a runbook's ``Job``) by that kind's ``follower``, any other
    by :class:`actions.rollout.RolloutReader` (a workload's rollout, as ``kubectl rollout
    status`` reads it)."""

    def __init__(self, rollouts: Follower, others: Mapping[str, Follower]) -> None:
        self._rollouts = rollouts
        self._others = others

    def check(self, watch: RolloutWatch, *, elapsed: float, timeout: float) -> RolloutResult | None:
        """One reading of ``watch`` (its result once it has ended or ``elapsed`` reached
        ``timeout`` seconds; None while it runs). Raises ``actions.errors.ActionError``."""
        reader = self._others.get(watch.kind, self._rollouts)
        return reader.check(watch, elapsed=elapsed, timeout=timeout)


def build_follower(*, kube: KubernetesPort, clock: Callable[[], datetime]) -> WatchReader:
    """The reader of everything the gate follows, from the kinds of :data:`KINDS` that declare
    a ``follower`` the backends allow."""
    backends = Backends(kube=kube, clock=clock)
    others: dict[str, Follower] = {}
    for spec in KINDS:
        follower = spec.follower(backends) if spec.follower is not None else None
        if spec.follows is not None and follower is not None:
            others[spec.follows] = follower
    return WatchReader(RolloutReader(kube), others)
