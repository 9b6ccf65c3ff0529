"""``rollback``: a Deployment back to an earlier revision, as ``kubectl rollout undo`` does.

kubectl (``k8s.io/kubectl/pkg/polymorphichelpers/rollback.go``) picks the ReplicaSet the
Deployment controls whose ``deployment.kubernetes.io/revision`` is the target (default: the
second-highest revision, "the previous one"), refuses a paused Deployment, skips when that
template is already the Deployment's, and sends one JSON patch: ``replace /spec/template`` with
the ReplicaSet's pod template minus its ``pod-template-hash`` label, and ``replace
/metadata/annotations`` with the ReplicaSet's annotations (``kubernetes.io/change-cause``…) over
the Deployment's own bookkeeping ones. This module sends exactly that patch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from actions.base import Outcome, Preview, Target
from actions.errors import Conflict, Invalid, MaybeApplied, NotFound
from actions.history import (
    REVISION,
    Revision,
    controlled_replica_sets,
    describe_revision,
    revisions_of,
    template_without_hash,
)
from actions.readback import CONFIRMED, Seen, read_back
from actions.rollout import RolloutFollower
from actions.spec import Arg, ArgType, KindSpec, Scope, Undo
from actions.workloads import WorkloadKind, WorkloadState, find_workload

ANNOTATIONS_KEPT = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
"""Annotations kubectl keeps from the Deployment rather than copying from the ReplicaSet."""


class RollbackParams(BaseModel):
    """``/ops rollback <deployment> [--to-revision N] -n <namespace>``; None: the previous."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1, max_length=63)
    to_revision: int | None = Field(default=None, ge=1)


def _undo(params: BaseModel, facts: Mapping[str, Any]) -> Undo | None:
    """Rolling back to the revision the Deployment was at (its ReplicaSet keeps that revision
    number), as ``kubectl rollout undo --to-revision`` would; None when it was not known."""
    assert isinstance(params, RollbackParams)
    current = facts.get("current_revision")
    if current is None:
        return None
    return Undo("rollback", params.model_copy(update={"to_revision": int(current)}))


KIND = KindSpec(
    name="rollback",
    summary="roll a Deployment back to its previous (or the given) revision, as "
    "`kubectl rollout undo` does",
    example='/ops rollback payments-api -n payments --to-revision 4 --reason "bad 1.4.3"',
    grammar=(
        Arg(
            "deployment",
            ArgType.WORKLOAD,
            metavar="<deployment>",
            help="a Deployment: a name, or deployment/name",
            kinds=(WorkloadKind.DEPLOYMENT,),
            refused="only Deployments have a rollout history ('{text}' is a {kind})",
        ),
        Arg(
            "to_revision",
            ArgType.INTEGER,
            flags=("--to-revision",),
            metavar="N",
            required=False,
            help="the revision to go back to (default: the previous one)",
            low=1,
            noun="revision number",
            below="revisions start at 1",
        ),
        Arg(
            "namespace",
            flags=("-n", "--namespace"),
            metavar="<namespace>",
            help="the workload's namespace",
        ),
    ),
    params_model=RollbackParams,
    scope=Scope.NAMESPACE,
    reversible=True,  # rolling back is undone by rolling back again
    undo=_undo,
    build=lambda b: Rollback(
        kube=b.kube,
        clock=b.clock,
        rollout_timeout=b.rollout_timeout,
        sleep=b.sleep,
        poll_interval=b.poll_interval,
    ),
)


def select_revision(revisions: list[Revision], to_revision: int | None, ref: str) -> Revision:
    """The target among ``revisions`` (ascending), as kubectl picks it: ``to_revision``, or the
    second-highest revision. Raises ``NotFound`` / ``Invalid`` with kubectl's reasons."""
    numbers = ", ".join(str(r.number) for r in revisions) or "none"
    if to_revision is not None:
        for revision in revisions:
            if revision.number == to_revision:
                return revision
        raise NotFound(
            f"revision {to_revision} is not in the history of {ref} (revisions: {numbers}); "
            "see /ops history"
        )
    if len(revisions) < 2:
        raise Invalid(f"{ref} has no previous revision to roll back to (revisions: {numbers})")
    return revisions[-2]


def rollback_patch(deployment: dict[str, Any], replica_set: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch ``kubectl rollout undo`` sends to restore ``replica_set``'s template."""
    dep_annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    annotations = {k: v for k, v in dep_annotations.items() if k in ANNOTATIONS_KEPT}
    rs_annotations = (replica_set.get("metadata") or {}).get("annotations") or {}
    annotations.update({k: v for k, v in rs_annotations.items() if k not in ANNOTATIONS_KEPT})
    template = template_without_hash((replica_set.get("spec") or {}).get("template") or {})
    op = "replace" if "annotations" in (deployment.get("metadata") or {}) else "add"
    return [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": op, "path": "/metadata/annotations", "value": annotations},
    ]


class Rollback(RolloutFollower):
    """The rollback request kind.

    Constructed as :class:`actions.rollout.RolloutFollower` (``kube``, ``clock``,
    ``rollout_timeout``, ``sleep``, ``poll_interval``).
    """

    name: ClassVar[str] = KIND.name
    reversible: ClassVar[bool] = KIND.reversible
    params_model: ClassVar[type[BaseModel]] = KIND.params_model

    def _read(
        self, context: str | None, params: RollbackParams
    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[Revision]]:
        deployment = find_workload(
            self._kube, context, params.namespace, params.name, WorkloadKind.DEPLOYMENT
        )
        if (deployment.get("spec") or {}).get("paused"):
            raise Invalid(
                f"deployment/{params.name} is paused; kubectl refuses to roll back a paused "
                "deployment (run `kubectl rollout resume` first)"
            )
        replica_sets = controlled_replica_sets(self._kube, context, deployment)
        return deployment, replica_sets, revisions_of(deployment, replica_sets)

    @staticmethod
    def _current(deployment: dict[str, Any], revisions: list[Revision]) -> int | None:
        for revision in revisions:
            if revision.current:
                return revision.number
        text = ((deployment.get("metadata") or {}).get("annotations") or {}).get(REVISION, "")
        return int(text) if str(text).isdigit() else None

    def _plan(
        self, context: str | None, params: RollbackParams, to_revision: int | None
    ) -> tuple[dict[str, Any], list[Revision], Revision, list[dict[str, Any]]]:
        deployment, replica_sets, revisions = self._read(context, params)
        ref = f"deployment/{params.name}"
        target = select_revision(revisions, to_revision, ref)
        if target.current:
            raise Invalid(
                f"revision {target.number} is the current revision of {ref}: nothing to roll "
                "back (kubectl: skipped rollback, current template already matches)"
            )
        replica_set = next(
            rs for rs in replica_sets if rs["metadata"]["name"] == target.replica_set
        )
        return deployment, revisions, target, rollback_patch(deployment, replica_set)

    def preview(self, params: BaseModel, *, target: Target) -> Preview:
        """Read the Deployment and its revisions; pick the target as kubectl does; dry-run the
        patch (``dryRun=All``).

        Facts: ``kind``, ``name``, ``namespace``, ``current_revision`` (None if unknown),
        ``target_revision``, ``current`` and ``target`` (``Revision.as_facts()``; ``current``
        may be None). Raises ``NotFound`` (no Deployment, no such revision), ``Invalid``
        (paused, no previous revision, target is current, the API server refused the dry run).
        """
        assert isinstance(params, RollbackParams)
        context = target.kube_context
        deployment, revisions, chosen, patch = self._plan(context, params, params.to_revision)
        self._kube.json_patch_workload(
            context, WorkloadKind.DEPLOYMENT, params.namespace, params.name, patch, dry_run=True
        )
        current_number = self._current(deployment, revisions)
        current = next((r for r in revisions if r.number == current_number), None)
        now = self._clock()
        ref = f"deployment/{params.name}"
        lines = (
            f"Roll back *{ref}* in namespace *{params.namespace}* "
            f"(environment {target.environment})",
            "From: "
            + (
                describe_revision(current, now)
                if current is not None
                else f"revision {current_number or '?'} (its ReplicaSet is gone)"
            ),
            "To: " + describe_revision(chosen, now),
        )
        facts = {
            "kind": WorkloadKind.DEPLOYMENT.value,
            "name": params.name,
            "namespace": params.namespace,
            "current_revision": current_number,
            "target_revision": chosen.number,
            "current": current.as_facts() if current is not None else None,
            "target": chosen.as_facts(),
        }
        return Preview(target=ref, lines=lines, facts=facts)

    def execute(self, params: BaseModel, *, target: Target, preview: Preview) -> Outcome:
        """Re-read the Deployment, check it is still at the previewed revision, send kubectl's
        patch; the Outcome's ``rollout`` is left to follow (as
        :meth:`Restart.execute <actions.restart.Restart.execute>`).

        A patch sent without an answer is read back (:mod:`actions.readback`): the template is
        the target revision's (carry on), still the one before (``TemporaryError``: safe to ask
        again), or another (``OutcomeUnknown``). Raises ``Conflict`` when the Deployment moved to
        another revision since the preview, and the port's errors.
        """
        assert isinstance(params, RollbackParams)
        context = target.kube_context
        wanted = int(preview.facts["target_revision"])
        deployment, revisions, chosen, patch = self._plan(context, params, wanted)
        ref = preview.target
        now_at = self._current(deployment, revisions)
        if now_at != preview.facts.get("current_revision"):
            raise Conflict(
                f"{ref} moved from revision {preview.facts.get('current_revision')} to "
                f"{now_at} since this rollback was previewed; nothing was changed, ask again"
            )
        confirmed = False
        try:
            self._kube.json_patch_workload(
                context, WorkloadKind.DEPLOYMENT, params.namespace, params.name, patch
            )
        except MaybeApplied as exc:
            self._read_back(exc, context, params, deployment, patch, chosen.number)
            confirmed = True
        applied = (
            f"rolled back {ref} in {params.namespace} from revision {now_at} to revision "
            f"{chosen.number} ({', '.join(chosen.images)})"
        )
        if confirmed:
            applied += f" ({CONFIRMED})"
        facts: dict[str, Any] = {
            "from_revision": now_at,
            "to_revision": chosen.number,
            "images": list(chosen.images),
        }
        return self._watch(
            applied,
            facts,
            context=context,
            kind=WorkloadKind.DEPLOYMENT,
            namespace=params.namespace,
            name=params.name,
        )

    def _read_back(
        self,
        error: MaybeApplied,
        context: str | None,
        params: RollbackParams,
        before: dict[str, Any],
        patch: list[dict[str, Any]],
        to_revision: int,
    ) -> dict[str, Any]:
        """The Deployment read back after a rollback patch that got no answer; see
        :func:`actions.readback.read_back`. Its pod template is compared with the one the patch
        writes and the one it had before (``pod-template-hash`` left out, as kubectl does)."""
        wanted = template_without_hash(patch[0]["value"])
        was = template_without_hash((before.get("spec") or {}).get("template") or {})

        def judge(obj: dict[str, Any]) -> Seen:
            template = template_without_hash((obj.get("spec") or {}).get("template") or {})
            if template == wanted:
                return Seen.APPLIED
            return Seen.NOT_APPLIED if template == was else Seen.UNCLEAR

        def state(obj: dict[str, Any]) -> dict[str, Any]:
            now = WorkloadState.from_object(obj)
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            return {
                "revision": annotations.get(REVISION, "?"),
                "images": ", ".join(now.images) or "none",
                "ready": f"{now.ready}/{now.desired}",
            }

        return read_back(
            error,
            change=f"the rollback to revision {to_revision}",
            subject=f"deployment/{params.name} in {params.namespace}",
            read=lambda: self._kube.get_workload(
                context, WorkloadKind.DEPLOYMENT, params.namespace, params.name
            ),
            judge=judge,
            state=state,
            sleep=self._sleep,
            pause=self._poll_interval,
        )
