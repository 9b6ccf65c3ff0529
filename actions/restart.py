"""``restart``: a rolling restart with the semantics of ``kubectl rollout restart``.

kubectl sends a strategic merge patch that sets the pod template annotation
``kubectl.kubernetes.io/restartedAt`` to the current time (RFC 3339), and refuses a paused
Deployment; this module does exactly that, for Deployments, StatefulSets and DaemonSets.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from actions.base import Outcome, Preview, Target
from actions.errors import Invalid, NotFound
from actions.kube import KubernetesPort
from actions.workloads import WorkloadKind, WorkloadState

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class RestartParams(BaseModel):
    """``/ops restart <workload> -n <namespace>``; ``kind`` None means "find it by name"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=253)
    kind: WorkloadKind | None = None
    namespace: str = Field(min_length=1, max_length=63)


class Restart:
    """The restart request kind. ``kube`` is the Kubernetes adapter; ``clock`` returns aware UTC."""

    name: ClassVar[str] = "restart"
    reversible: ClassVar[bool] = True
    params_model: ClassVar[type[BaseModel]] = RestartParams

    def __init__(self, *, kube: KubernetesPort, clock: Callable[[], datetime]) -> None:
        self._kube = kube
        self._clock = clock

    def _find(self, params: RestartParams, context: str | None) -> dict[str, Any]:
        if params.kind is not None:
            try:
                return self._kube.get_workload(context, params.kind, params.namespace, params.name)
            except NotFound as exc:
                raise NotFound(
                    f"no {params.kind} named '{params.name}' in namespace {params.namespace}"
                ) from exc
        found = []
        for kind in WorkloadKind:
            try:
                found.append(self._kube.get_workload(context, kind, params.namespace, params.name))
            except NotFound:
                continue
        if not found:
            raise NotFound(
                f"no Deployment, StatefulSet or DaemonSet named '{params.name}' "
                f"in namespace {params.namespace}"
            )
        if len(found) > 1:
            kinds = ", ".join(f"{o['kind'].lower()}/{params.name}" for o in found)
            raise Invalid(f"'{params.name}' names several workloads ({kinds}); say which one")
        return found[0]

    def preview(self, params: BaseModel, *, target: Target) -> Preview:
        """Read the workload: kind, name, namespace, ready/desired replicas, images.

        Raises ``NotFound`` when it does not exist and ``Invalid`` for a paused Deployment.
        """
        assert isinstance(params, RestartParams)
        state = WorkloadState.from_object(self._find(params, target.kube_context))
        if state.paused:
            raise Invalid(
                f"{state.ref} is paused; kubectl refuses to restart a paused deployment "
                "(run `kubectl rollout resume` first)"
            )
        lines = (
            f"Rolling restart of *{state.ref}* in namespace *{state.namespace}* "
            f"(environment {target.environment})",
            f"Ready: {state.ready}/{state.desired}",
            f"Image(s): {', '.join(state.images) or 'none'}",
        )
        facts = {
            "kind": state.kind,
            "name": state.name,
            "namespace": state.namespace,
            "ready": state.ready,
            "desired": state.desired,
            "images": list(state.images),
            "generation": state.generation,
        }
        return Preview(target=state.ref, lines=lines, facts=facts)

    def execute(self, params: BaseModel, *, target: Target, preview: Preview) -> Outcome:
        """Patch ``spec.template.metadata.annotations[restartedAt]`` as kubectl does."""
        assert isinstance(params, RestartParams)
        kind = preview.facts["kind"]
        restarted_at = self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at}}}}}
        obj = self._kube.patch_workload(
            target.kube_context, kind, params.namespace, preview.facts["name"], patch
        )
        generation = obj.get("metadata", {}).get("generation")
        return Outcome(
            summary=(
                f"restarted {preview.target} in {params.namespace} (restartedAt {restarted_at})"
            ),
            facts={"restartedAt": restarted_at, "generation": generation},
        )
