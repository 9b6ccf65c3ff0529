"""Generated policies and requests for the policy's properties, and the reference matcher they are
checked against."""

from __future__ import annotations

import dataclasses
import fnmatch
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from approvals.policy import (
    RequestContext,
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], RequestContext]:
    """A random policy and a request; half of the requests are aimed at one of its rules."""
    data = draw(policies())
    context = draw(contexts())
    if not draw(st.booleans()):
        return data, context
    match = draw(st.sampled_from(data["rules"]))["match"]
    changes: dict[str, Any] = {"action": draw(st.sampled_from(sorted(_covered(match["action"]))))}
    if "environment" in match:
        changes["environment"] = draw(st.sampled_from(_listed(match["environment"])))
    for field, values in (("namespace", NAMESPACES), ("path", PATHS)):
        if field in match:
            fits = [
                v for v in values if any(fnmatch.fnmatchcase(v, g) for g in _listed(match[field]))
            ]
            if fits:
                changes[field] = draw(st.sampled_from(fits))
    if match.get("channel") == "incident":
        changes["incident"] = True
    if match.get("requester_kind", "any") != "any":
        changes["requester_kind"] = match["requester_kind"]
    if "requesters" in match:
        changes["requester"] = draw(
            st.sampled_from([u for g in match["requesters"] for u in GROUPS[g]])
        )
    return data, dataclasses.replace(context, **changes)


def reference_matches(rule: dict[str, Any], context: RequestContext) -> bool:
    """An independent reading of the matching rules, straight from the raw YAML data."""
    match = rule["match"]
    action = "access" if context.action == "extend" else context.action
    checks = [action in _covered(match["action"])]
    if "environment" in match:
        checks.append(context.environment in _listed(match["environment"]))
    for field, value in (("namespace", context.namespace), ("path", context.path)):
        if field in match:
            checks.append(
                value is not None
                and any(fnmatch.fnmatchcase(value, glob) for glob in _listed(match[field]))
            )
    if match.get("channel") == "incident":
        checks.append(context.incident)
    if match.get("requester_kind", "any") != "any":
        checks.append(match["requester_kind"] == context.requester_kind)
    if "requesters" in match:
        checks.append(any(context.requester in GROUPS[g] for g in match["requesters"]))
    return all(checks)


def first_match(data: dict[str, Any], context: RequestContext) -> int | None:
    return next((i for i, r in enumerate(data["rules"]) if reference_matches(r, context)), None)


# the number of examples comes from the profile (tests/conftest.py): 250 in CI
PROPERTY_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


ACTIONS = ["restart", "scale", "rollback", "access", "rotate", "restore"]


CONTEXT_ACTIONS = [*ACTIONS, "extend"]


ENVS = ["prod", "staging"]


GROUPS = {"sre": ["U1", "U2"], "sec": ["U3"], "both": ["U2", "U3", "U4"], "bots": ["A1"]}


USERS = ["U1", "U2", "U3", "U4", "U5", "A1"]


NAMESPACE_GLOBS = ["payments", "pay*", "staging-*", "*"]


NAMESPACES = ["payments", "payroll", "staging-web", "other"]


PATH_GLOBS = ["secret/prod/*", "secret/*"]


PATHS = ["secret/prod/db", "secret/staging/db", "kv/x"]


ZONES = ["UTC", "Europe/Berlin", "America/New_York"]


TIMES = [
    datetime(2026, 12, 19, 22, 30, tzinfo=UTC),
    datetime(2026, 12, 20, 3, 0, tzinfo=UTC),
    datetime(2026, 12, 25, tzinfo=UTC),
    datetime(2027, 3, 1, tzinfo=UTC),
]


def one_or_list(values: list[str]) -> st.SearchStrategy[str | list[str]]:
    return st.one_of(
        st.sampled_from(values),
        st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True),
    )


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _covered(actions: str | list[str]) -> set[str]:
    out = set(_listed(actions))
    return out | {"restore"} if "rotate" in out else out


def group_names() -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(sorted(GROUPS)), min_size=1, max_size=2, unique=True)


def sometimes() -> st.SearchStrategy[bool]:
    """True one time in three: random rules with fewer conditions match more requests."""
    return st.integers(0, 2).map(lambda n: n == 0)


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    match: dict[str, Any] = {"action": draw(one_or_list(ACTIONS))}
    if draw(sometimes()):
        match["environment"] = draw(one_or_list(ENVS))
    if draw(sometimes()):
        match["namespace"] = draw(one_or_list(NAMESPACE_GLOBS))
    if draw(sometimes()):
        match["path"] = draw(one_or_list(PATH_GLOBS))
    channel = draw(st.sampled_from([None, None, "any", "incident"]))
    if channel is not None:
        match["channel"] = channel
    if draw(sometimes()):
        match["requesters"] = draw(group_names())
    kind_match = draw(st.sampled_from([None, None, "human", "agent", "any"]))
    if kind_match is not None:
        match["requester_kind"] = kind_match
    rule: dict[str, Any] = {"match": match}
    covered = _covered(match["action"])
    irreversible = bool(covered & {"rotate", "restore"})
    kind = draw(st.sampled_from(["auto", "approvers", "steps", "deny"]))
    if kind == "deny":
        rule["deny"] = draw(st.sampled_from(["frozen", "not here"]))
        return rule
    if kind == "auto":
        rule["approval"] = "auto"
        if irreversible:
            rule["allow_irreversible_auto"] = True  # without it the policy is invalid
    elif kind == "approvers":
        rule["approvers"] = draw(group_names())
        if draw(st.booleans()):
            rule["min_approvals"] = draw(st.integers(1, 3))
        if draw(st.booleans()):
            rule["approval_channel"] = "C0RULE"
    else:
        rule["steps"] = [
            {"approvers": draw(group_names()), "min_approvals": draw(st.integers(1, 2))}
            for _ in range(draw(st.integers(1, 3)))
        ]
    if draw(sometimes()):
        rule["reason"] = "required"
        if draw(st.booleans()):
            rule["reason_min_length"] = draw(st.integers(1, 12))
    if kind != "auto" and draw(st.booleans()):
        rule["break_glass"] = draw(group_names())
    freeze_kind = draw(st.sampled_from([None, "approvers", "deny"]))
    if freeze_kind == "approvers":
        rule["during_freeze"] = {"approvers": draw(group_names())}
    elif freeze_kind == "deny":
        rule["during_freeze"] = {"deny": "frozen rule"}
    if "access" in covered and draw(st.booleans()):
        if kind == "auto":
            rule["extend"] = "auto"
        else:
            rule["extend"] = draw(st.sampled_from(["auto", "approval"]))
    return rule


@st.composite
def freezes(draw: st.DrawFn) -> dict[str, Any]:
    freeze: dict[str, Any] = {
        "start": f"{FREEZE_START:%Y-%m-%d %H:%M}",
        "end": f"{FREEZE_END:%Y-%m-%d %H:%M}",
        "timezone": draw(st.sampled_from(ZONES)),
        "reason": "freeze",
    }
    if draw(st.booleans()):
        freeze["allow"] = draw(st.lists(st.sampled_from(ACTIONS), max_size=2, unique=True))
    if draw(st.booleans()):
        freeze["environments"] = draw(one_or_list(ENVS))
    return freeze


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "version": 1,
        "approval_channel": "C0DEFAULT",
        "groups": {name: {"users": users} for name, users in GROUPS.items()},
        "environments": {"prod": {"namespaces": ["pay*"]}, "staging": {"namespaces": ["st*"]}},
        "freezes": draw(st.lists(freezes(), max_size=2)),
        "rules": draw(st.lists(rules(), min_size=1, max_size=8)),
    }


@st.composite
def contexts(draw: st.DrawFn) -> RequestContext:
    requester = draw(st.sampled_from(USERS))
    return RequestContext(
        action=draw(st.sampled_from([*CONTEXT_ACTIONS, "restart", "rotate"])),
        requester=requester,
        environment=draw(st.sampled_from([None, *ENVS])),
        namespace=draw(st.sampled_from([None, *NAMESPACES])),
        path=draw(st.sampled_from([None, *PATHS])),
        incident=draw(st.booleans()),
        requester_kind=draw(st.sampled_from(["human", "human", "agent"])),
        reason=draw(st.sampled_from([None, "short", "a long enough reason", "a long enough one"])),
        break_glass=draw(sometimes()),
        at=draw(st.sampled_from(TIMES)),
    )


FREEZE_START, FREEZE_END = datetime(2026, 12, 20), datetime(2027, 1, 2)
