"""What every request kind provides to the gate: one module per kind behind :class:`ActionKind`.

A kind has a pydantic params model, a ``preview`` that reads the backend and says exactly what will
happen (no side effects), and an ``execute`` that does it. The gate persists ``Preview.facts`` and
``Outcome.facts`` (JSON) and shows ``summary`` lines to people; neither may ever hold a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel


@dataclass(frozen=True)
class Target:
    """Where a request acts, and under which rule settings.

    ``environment`` (and so ``kube_context``) and ``namespace`` come from the policy's
    environments; ``settings`` is the JSON of the matching rule's settings for this kind
    (``approvals.policy.Decision.settings``: ``limits``, ``roles``, ``max_duration`` in seconds,
    ``rotate`` …), which a kind enforces in ``preview`` before anyone is asked.
    """

    environment: str
    kube_context: str | None
    namespace: str | None
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preview:
    """What will happen, read from the backend before anyone is asked.

    ``target`` names the object (``deployment/payments-api``); ``lines`` are human-readable facts
    for the approval message; ``facts`` is the same as JSON for the database.
    """

    target: str
    lines: tuple[str, ...]
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutWatch:
    """A workload whose rollout is still to be followed after a change: its ``kind``
    (Deployment, StatefulSet, DaemonSet, or a batch/v1 ``Job`` followed to its end),
    ``namespace``, ``name`` and ``kube_context``; ``timeout`` (seconds) replaces the gate's
    rollout timeout when set (a Job is followed until its own ``activeDeadlineSeconds``)."""

    kind: str
    namespace: str
    name: str
    kube_context: str | None
    timeout: float | None = None

    def as_json(self) -> dict[str, Any]:
        """JSON for the database (``requests.rollout``)."""
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "kube_context": self.kube_context,
            "timeout": self.timeout,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutWatch:
        """The inverse of :meth:`as_json`. Raises ``KeyError`` for a missing field."""
        return cls(
            data["kind"],
            data["namespace"],
            data["name"],
            data.get("kube_context"),
            data.get("timeout"),
        )


@dataclass(frozen=True)
class Outcome:
    """What happened: a one-line ``summary`` for Slack and ``facts`` for the audit trail.

    ``rollout`` is set when the change was applied and its rollout remains to be followed
    (restart, scale, rollback): ``summary`` then says what was applied, and the request is not
    finished until :func:`actions.rollout.conclude` says the rollout completed or failed. The
    gate follows such rollouts from one periodic job, so that no thread waits on one.
    """

    summary: str
    facts: dict[str, Any] = field(default_factory=dict)
    rollout: RolloutWatch | None = None


class ActionKind(Protocol):
    """One request kind (restart, scale, …).

    ``name`` is the command word; ``reversible`` tells the policy whether the change can be undone.
    """

    name: ClassVar[str]
    reversible: ClassVar[bool]
    params_model: ClassVar[type[BaseModel]]

    def preview(self, params: BaseModel, *, target: Target) -> Preview:
        """Read the backend and describe the change. Raises ``actions.errors.ActionError``."""
        ...

    def execute(self, params: BaseModel, *, target: Target, preview: Preview) -> Outcome:
        """Carry the change out; an ``Outcome`` with a ``rollout`` leaves the rollout to be
        followed. Raises ``actions.errors.ActionError`` when it fails."""
        ...
