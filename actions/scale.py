"""``scale``: set a Deployment's or StatefulSet's replicas, as ``kubectl scale`` does.

kubectl sends the merge patch ``{"spec": {"replicas": N}}`` to the workload's ``scale``
subresource; this module does the same, after enforcing the rule's ``limits``, pointing out a
HorizontalPodAutoscaler that may undo the change, and validating it with a server-side dry run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from actions.base import Outcome, Preview, Target
from actions.errors import Invalid, MaybeApplied
from actions.readback import CONFIRMED, Seen, read_back
from actions.rollout import RolloutFollower
from actions.spec import Arg, ArgType, KindSpec, RuleSettings, Scope, Undo
from actions.workloads import WorkloadKind, WorkloadState, find_workload

SCALABLE = (WorkloadKind.DEPLOYMENT, WorkloadKind.STATEFULSET)


class ScaleParams(BaseModel):
    """``/ops scale <workload> <replicas> -n <namespace>``; ``kind`` None: find it by name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=253)
    kind: WorkloadKind | None = None
    namespace: str = Field(min_length=1, max_length=63)
    replicas: int = Field(ge=0)


class Limits(BaseModel):
    """A scale rule's ``limits``; each key optional (None).

    Validated with the policy: ``min_replicas``/``max_replicas`` >= 0, ``min_replicas <=
    max_replicas``, ``max_factor > 1``. Enforced by :func:`check_limits` when a request is
    previewed, on a scale from the current to the requested replica count:

    - ``min_replicas <= requested <= max_replicas`` (inclusive; an absent bound is no bound);
    - scaling to 0 needs ``min_replicas: 0`` (a rule without limits refuses it);
    - ``max_factor`` bounds ``requested / current`` when growing and ``current / requested``
      when shrinking, a 0 on either side counting as 1.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=0)
    max_factor: float | None = Field(default=None, gt=1)

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if (
            self.min_replicas is not None
            and self.max_replicas is not None
            and self.min_replicas > self.max_replicas
        ):
            raise ValueError("min_replicas is greater than max_replicas")
        return self


class ScaleSettings(RuleSettings):
    """A rule's settings for ``scale``: its ``limits`` (see :class:`Limits`)."""

    limits: Limits | None = None


def _undo(params: BaseModel, facts: Mapping[str, Any]) -> Undo:
    """Scaling back to the replica count the preview read."""
    assert isinstance(params, ScaleParams)
    return Undo("scale", params.model_copy(update={"replicas": int(facts["current_replicas"])}))


KIND = KindSpec(
    name="scale",
    summary="set the replicas of a Deployment or StatefulSet",
    example='/ops scale deploy/checkout 6 -n checkout --reason "traffic spike"',
    grammar=(
        Arg(
            "workload",
            ArgType.WORKLOAD,
            metavar="<workload>",
            help="a Deployment or StatefulSet: a name, or kind/name",
            kinds=SCALABLE,
            refused="a DaemonSet cannot be scaled (it runs one pod per node)",
        ),
        Arg(
            "replicas",
            ArgType.INTEGER,
            metavar="<replicas>",
            help="the number of replicas wanted",
            low=0,
            noun="number of replicas",
            below="replicas cannot be negative",
        ),
        Arg(
            "namespace",
            flags=("-n", "--namespace"),
            metavar="<namespace>",
            help="the workload's namespace",
        ),
    ),
    params_model=ScaleParams,
    scope=Scope.NAMESPACE,
    reversible=True,  # scaling back is another scale
    rule_settings=ScaleSettings,
    undo=_undo,
    build=lambda b: Scale(
        kube=b.kube,
        clock=b.clock,
        rollout_timeout=b.rollout_timeout,
        sleep=b.sleep,
        poll_interval=b.poll_interval,
    ),
)


def check_limits(limits: Mapping[str, Any] | None, current: int, requested: int) -> None:
    """Enforce a rule's ``limits`` (``min_replicas``, ``max_replicas``, ``max_factor``; each
    may be None) on a scale from ``current`` to ``requested`` replicas.

    Scaling to 0 needs ``min_replicas: 0``. ``max_factor`` bounds ``requested / current`` when
    growing and ``current / requested`` when shrinking, a 0 on either side counting as 1.
    Raises ``Invalid`` with a message the requester can act on.
    """
    limits = limits or {}
    low, high = limits.get("min_replicas"), limits.get("max_replicas")
    factor = limits.get("max_factor")
    bounds = _bounds(low, high)
    if requested == 0 and low != 0:
        raise Invalid(
            "scaling to 0 needs a rule that allows it (limits.min_replicas: 0); "
            f"this rule's limits: {bounds}"
        )
    if low is not None and requested < low:
        raise Invalid(
            f"{requested} replicas is below this rule's min_replicas of {low} ({bounds}); "
            "ask for more, or have the policy changed"
        )
    if high is not None and requested > high:
        raise Invalid(
            f"{requested} replicas is above this rule's max_replicas of {high} ({bounds}); "
            "ask for fewer, or have the policy changed"
        )
    if factor is not None:
        ratio = max(requested, 1) / max(current, 1)
        if ratio < 1:
            ratio = 1 / ratio
        if ratio > float(factor):
            direction = "up" if requested > current else "down"
            raise Invalid(
                f"{current} -> {requested} replicas scales {direction} by a factor of "
                f"{ratio:g}, more than this rule's max_factor of {float(factor):g}; "
                "scale in smaller steps"
            )


def _bounds(low: int | None, high: int | None) -> str:
    if low is None and high is None:
        return "no replica bounds"
    return (
        f"min_replicas {'-' if low is None else low}, max_replicas {'-' if high is None else high}"
    )


def autoscalers_of(hpas: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    """The HorizontalPodAutoscalers (autoscaling/v2 JSON) whose ``scaleTargetRef`` is the
    apps/v1 ``kind``/``name``: as ``[{"name", "min_replicas", "max_replicas"}]``."""
    found = []
    for hpa in hpas:
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        group = str(ref.get("apiVersion", "apps/v1")).split("/")[0]
        if ref.get("kind") == kind and ref.get("name") == name and group == "apps":
            found.append(
                {
                    "name": (hpa.get("metadata") or {}).get("name", ""),
                    "min_replicas": int(spec.get("minReplicas", 1)),
                    "max_replicas": int(spec.get("maxReplicas", 0)),
                }
            )
    return found


class Scale(RolloutFollower):
    """The scale request kind.

    Constructed as :class:`actions.rollout.RolloutFollower` (``kube``, ``clock``,
    ``rollout_timeout``, ``sleep``, ``poll_interval``).
    """

    name: ClassVar[str] = KIND.name
    reversible: ClassVar[bool] = KIND.reversible
    params_model: ClassVar[type[BaseModel]] = KIND.params_model

    def preview(self, params: BaseModel, *, target: Target) -> Preview:
        """Read the workload and its scale; enforce ``target.settings["limits"]``; find the
        HPAs that target it; dry-run the change (``dryRun=All``).

        Facts: ``kind``, ``name``, ``namespace``, ``current_replicas``, ``replicas``,
        ``ready``, ``images``, ``autoscalers`` (``[{name, min_replicas, max_replicas}]``).
        Raises ``NotFound``, ``Invalid`` (limits, no change, a DaemonSet, or the API server's
        refusal of the dry run) and the port's errors.
        """
        assert isinstance(params, ScaleParams)
        context = target.kube_context
        obj = find_workload(
            self._kube, context, params.namespace, params.name, params.kind, kinds=SCALABLE
        )
        state = WorkloadState.from_object(obj)
        scale = self._kube.get_scale(context, state.kind, params.namespace, state.name)
        current = int((scale.get("spec") or {}).get("replicas", 0))
        if params.replicas == current:
            raise Invalid(f"{state.ref} already has {current} replicas; nothing to change")
        check_limits(target.settings.get("limits"), current, params.replicas)
        hpas = autoscalers_of(
            self._kube.list_horizontal_pod_autoscalers(context, params.namespace),
            state.kind,
            state.name,
        )
        self._kube.patch_scale(
            context, state.kind, params.namespace, state.name, params.replicas, dry_run=True
        )
        lines = [
            f"Scale *{state.ref}* in namespace *{state.namespace}* "
            f"(environment {target.environment}): *{current} -> {params.replicas}* replicas",
            f"Ready now: {state.ready}/{state.desired}",
            f"Image(s): {', '.join(state.images) or 'none'}",
        ]
        for hpa in hpas:
            lines.append(
                f":warning: HorizontalPodAutoscaler *{hpa['name']}* targets it "
                f"(min {hpa['min_replicas']}, max {hpa['max_replicas']}) "
                "and may undo a manual scale"
            )
        facts = {
            "kind": state.kind,
            "name": state.name,
            "namespace": state.namespace,
            "current_replicas": current,
            "replicas": params.replicas,
            "ready": state.ready,
            "images": list(state.images),
            "autoscalers": hpas,
        }
        return Preview(target=state.ref, lines=tuple(lines), facts=facts)

    def execute(self, params: BaseModel, *, target: Target, preview: Preview) -> Outcome:
        """PATCH the scale subresource; the Outcome's ``rollout`` is left to follow (as
        :meth:`Restart.execute <actions.restart.Restart.execute>`).

        A PATCH sent without an answer is read back (:mod:`actions.readback`): ``spec.replicas``
        is the number asked for (carry on), still the number before (``TemporaryError``: safe
        to ask again), or another (``OutcomeUnknown``). Raises the port's errors when the change
        itself fails.
        """
        assert isinstance(params, ScaleParams)
        kind, name = preview.facts["kind"], preview.facts["name"]
        context = target.kube_context
        asked_at = preview.facts["current_replicas"]
        current = self._kube.get_scale(context, kind, params.namespace, name)
        before = int((current.get("spec") or {}).get("replicas") or 0)
        confirmed = False
        try:
            scale = self._kube.patch_scale(context, kind, params.namespace, name, params.replicas)
        except MaybeApplied as exc:
            scale = self._read_back(exc, context, params, preview, before)
            confirmed = True
        applied = (
            f"scaled {preview.target} in {params.namespace} from {before} to {params.replicas}"
        )
        if before != asked_at:  # an autoscaler (or someone) moved it since the preview
            applied += f" ({asked_at} when it was asked for)"
        if confirmed:
            applied += f" ({CONFIRMED})"
        facts = {
            "from_replicas": before,
            "replicas": int((scale.get("spec") or {}).get("replicas", params.replicas)),
        }
        return self._watch(
            applied, facts, context=context, kind=kind, namespace=params.namespace, name=name
        )

    def _read_back(
        self,
        error: MaybeApplied,
        context: str | None,
        params: ScaleParams,
        preview: Preview,
        before: int,
    ) -> dict[str, Any]:
        """The ``Scale`` read back after a scale PATCH that got no answer; see
        :func:`actions.readback.read_back`."""
        kind, name = preview.facts["kind"], preview.facts["name"]

        def judge(scale: dict[str, Any]) -> Seen:
            replicas = _replicas(scale)
            if replicas == params.replicas:
                return Seen.APPLIED
            return Seen.NOT_APPLIED if replicas == before else Seen.UNCLEAR

        def state(scale: dict[str, Any]) -> dict[str, Any]:
            return {
                "replicas": _replicas(scale),
                "running": int((scale.get("status") or {}).get("replicas") or 0),
            }

        return read_back(
            error,
            change=f"the scale from {before} to {params.replicas} replicas",
            subject=f"{preview.target} in {params.namespace}",
            read=lambda: self._kube.get_scale(context, kind, params.namespace, name),
            judge=judge,
            state=state,
            sleep=self._sleep,
            pause=self._poll_interval,
        )


def _replicas(scale: dict[str, Any]) -> int | None:
    """``spec.replicas`` of a ``Scale``, or None when it has none."""
    value = (scale.get("spec") or {}).get("replicas")
    return None if value is None else int(value)
