"""``restart``: a rolling restart with the semantics of ``kubectl rollout restart``.

kubectl sends a strategic merge patch that sets the pod template annotation
``kubectl.kubernetes.io/restartedAt`` to the current time (RFC 3339), and refuses a paused
Deployment; this module does exactly that, for Deployments, StatefulSets and DaemonSets, then
leaves the rollout to be followed as ``kubectl rollout status`` does (:mod:`actions.rollout`).

``preview`` validates the same patch with a server-side dry run (``dryRun=All``, issue 3 item 6):
an admission webhook or policy engine that would refuse it is answered at once, before anyone is
asked to approve.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from actions.base import Outcome, Preview, Target
from actions.errors import Invalid, MaybeApplied
from actions.readback import CONFIRMED, Seen, read_back
from actions.rollout import RolloutFollower
from actions.spec import Arg, ArgType, KindSpec, Scope
from actions.workloads import WorkloadKind, WorkloadState, find_workload

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class RestartParams(BaseModel):
    """``/ops restart <workload> -n <namespace>``; ``kind`` None means "find it by name"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=253)
    kind: WorkloadKind | None = None
    namespace: str = Field(min_length=1, max_length=63)


KIND = KindSpec(
    name="restart",
    summary="rolling restart of a Deployment, StatefulSet or DaemonSet (name or kind/name)",
    example='/ops restart payments-api -n payments --reason "OOM after 1.4.2"',
    grammar=(
        Arg(
            "workload",
            ArgType.WORKLOAD,
            metavar="<workload>",
            help="a name, or kind/name (deploy/api, sts/db, ds/agent)",
        ),
        Arg(
            "namespace",
            flags=("-n", "--namespace"),
            metavar="<namespace>",
            help="the workload's namespace",
        ),
    ),
    params_model=RestartParams,
    scope=Scope.NAMESPACE,
    reversible=True,  # a restart changes no spec but the restartedAt annotation
    build=lambda b: Restart(
        kube=b.kube,
        clock=b.clock,
        rollout_timeout=b.rollout_timeout,
        sleep=b.sleep,
        poll_interval=b.poll_interval,
    ),
)


class Restart(RolloutFollower):
    """The restart request kind.

    Constructed as :class:`actions.rollout.RolloutFollower` (``kube``, ``clock``,
    ``rollout_timeout``, ``sleep``, ``poll_interval``).
    """

    name: ClassVar[str] = KIND.name
    reversible: ClassVar[bool] = KIND.reversible
    params_model: ClassVar[type[BaseModel]] = KIND.params_model

    def _find(self, params: RestartParams, context: str | None) -> dict[str, Any]:
        return find_workload(self._kube, context, params.namespace, params.name, params.kind)

    def _patch(self) -> tuple[str, dict[str, Any]]:
        """``(restartedAt, patch)``: the strategic merge patch ``kubectl rollout restart`` sends,
        with the clock's now in RFC 3339 (UTC, seconds)."""
        restarted_at = self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at}}}}}
        return restarted_at, patch

    def preview(self, params: BaseModel, *, target: Target) -> Preview:
        """Read the workload: kind, name, namespace, ready/desired replicas, images; dry-run
        the restart patch (``dryRun=All``) that ``execute`` will send.

        Raises ``NotFound`` when it does not exist, ``Invalid`` for a paused Deployment or when
        the API server refuses the dry run (e.g. an admission webhook's message), and the port's
        errors.
        """
        assert isinstance(params, RestartParams)
        state = WorkloadState.from_object(self._find(params, target.kube_context))
        if state.paused:
            raise Invalid(
                f"{state.ref} is paused; kubectl refuses to restart a paused deployment "
                "(run `kubectl rollout resume` first)"
            )
        _, patch = self._patch()
        self._kube.patch_workload(
            target.kube_context, state.kind, params.namespace, state.name, patch, dry_run=True
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
        """Patch ``spec.template.metadata.annotations[restartedAt]`` as kubectl does; the
        Outcome's ``rollout`` is left to follow (:meth:`RolloutFollower.follow` or the gate's
        job, which raise ``RolloutFailed`` when it does not complete).

        A patch sent without an answer is read back (:mod:`actions.readback`): the annotation
        we sent is there (carry on), the Deployment is as previewed (``TemporaryError``: safe to
        ask again), or it cannot be told (``OutcomeUnknown``). Raises the port's errors when the
        patch fails.
        """
        assert isinstance(params, RestartParams)
        kind, name = preview.facts["kind"], preview.facts["name"]
        context = target.kube_context
        restarted_at, patch = self._patch()
        confirmed = False
        try:
            obj = self._kube.patch_workload(context, kind, params.namespace, name, patch)
        except MaybeApplied as exc:
            obj = self._read_back(exc, context, params.namespace, preview, restarted_at)
            confirmed = True
        generation = obj.get("metadata", {}).get("generation")
        applied = f"restarted {preview.target} in {params.namespace} (restartedAt {restarted_at})"
        if confirmed:
            applied += f" ({CONFIRMED})"
        facts = {"restartedAt": restarted_at, "generation": generation}
        return self._watch(
            applied, facts, context=context, kind=kind, namespace=params.namespace, name=name
        )

    def _read_back(
        self,
        error: MaybeApplied,
        context: str | None,
        namespace: str,
        preview: Preview,
        restarted_at: str,
    ) -> dict[str, Any]:
        """The workload read back after a restart patch that got no answer; see
        :func:`actions.readback.read_back`. Not applied means: not our ``restartedAt``, and the
        ``generation`` is still the previewed one (nothing changed the spec since)."""
        kind, name = preview.facts["kind"], preview.facts["name"]

        def judge(obj: dict[str, Any]) -> Seen:
            if _restarted_at(obj) == restarted_at:
                return Seen.APPLIED
            generation = (obj.get("metadata") or {}).get("generation")
            if generation is not None and generation == preview.facts.get("generation"):
                return Seen.NOT_APPLIED
            return Seen.UNCLEAR

        def state(obj: dict[str, Any]) -> dict[str, Any]:
            now = WorkloadState.from_object(obj)
            return {
                "restartedAt": _restarted_at(obj) or "never",
                "generation": now.generation,
                "ready": f"{now.ready}/{now.desired}",
            }

        return read_back(
            error,
            change=f"the restart (restartedAt {restarted_at})",
            subject=f"{preview.target} in {namespace}",
            read=lambda: self._kube.get_workload(context, kind, namespace, name),
            judge=judge,
            state=state,
            sleep=self._sleep,
            pause=self._poll_interval,
        )


def _restarted_at(obj: dict[str, Any]) -> str | None:
    """The workload's pod template ``restartedAt`` annotation, or None."""
    template = (obj.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(RESTARTED_AT)
    return str(value) if value is not None else None
