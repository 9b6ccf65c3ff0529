"""The request form (a Slack modal) as Block Kit: pure builders and readers, no Slack client.

The form is derived from the kinds' declarations (``actions.spec.KindSpec.grammar``): one input
block per :class:`actions.spec.Arg` (block ``arg_<name>``), then a reason. A submitted form is read
back into the ``/ops`` words (:func:`form_words`) that ``bot.grammar.parse_words`` parses, so the
form and the slash command refuse the same things.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    ExternalDataSelectElement,
    InputBlock,
    InputInteractiveElement,
    MarkdownTextObject,
    NumberInputElement,
    Option,
    PlainTextInputElement,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from actions.spec import MAX_ID, Arg, ArgType, KindSpec
from approvals.explain import Explained
from approvals.policy import DecisionReason, Outcome
from bot.mrkdwn import escape

MODAL_CALLBACK = "ops_request"
"""The ``callback_id`` of the request form (its ``view_submission``)."""
KIND_BLOCK = "kind"
KIND_ACTION = "modal_kind"
NAMESPACE_ACTION = "modal_namespace"
WORKLOAD_ACTION = "modal_workload"
VALUE_ACTION = "value"
REASON_BLOCK = "reason"
DECISION_BLOCK = "decision"
MAX_OPTIONS = 100
"""The most options Slack shows in one select menu."""


@dataclass(frozen=True)
class Prefill:
    """What the form starts with: the kind's ``name``, argument texts by ``Arg.name`` (a
    workload as ``kind/name``), and the reason."""

    kind: str | None = None
    values: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None
    decision: str | None = None
    """What the gate would decide (mrkdwn, :func:`decision_text`); None: not known yet."""
    reason_required: bool = False


def block_id(arg: Arg) -> str:
    """The input block of ``arg`` in the form."""
    return f"arg_{arg.name}"


def _option(value: str, text: str | None = None) -> Option:
    return Option(value=value, label=(text or value)[:75])


def _kind_option(spec: KindSpec) -> Option:
    return _option(spec.name, f"{spec.word}: {spec.summary}")


def _element(arg: Arg, initial: str | None) -> InputInteractiveElement:
    """The input element of ``arg``: a search for a namespace or a workload, a number input
    within the argument's bounds, or text."""
    chosen = _option(initial) if initial else None
    if arg.name == "namespace":
        return ExternalDataSelectElement(
            action_id=NAMESPACE_ACTION, min_query_length=0, initial_option=chosen
        )
    if arg.type is ArgType.WORKLOAD:
        return ExternalDataSelectElement(
            action_id=WORKLOAD_ACTION,
            min_query_length=0,
            initial_option=chosen,
            placeholder="Search the namespace's workloads",
        )
    if arg.type is ArgType.INTEGER:
        number = initial if initial and initial.isdigit() else None
        return NumberInputElement(
            action_id=VALUE_ACTION,
            is_decimal_allowed=False,
            initial_value=number,
            min_value=0 if arg.low is None else arg.low,
            max_value=MAX_ID if arg.high is None else arg.high,
        )
    placeholder = {
        ArgType.DURATION: "e.g. 30m, 1h 30m",
        ArgType.WORKLOADS: "e.g. deploy/api,deploy/worker",
        ArgType.PARAMETERS: "key=value key=value",
    }.get(arg.type, (arg.metavar or "").strip("<>") or None)
    return PlainTextInputElement(
        action_id=VALUE_ACTION, initial_value=initial, placeholder=placeholder
    )


def _label(arg: Arg) -> str:
    name = (arg.noun or arg.name.replace("_", " ")).capitalize()
    return name[:2000]


def _hint(arg: Arg) -> str | None:
    parts = [arg.help] if arg.help else []
    if arg.type is ArgType.INTEGER and (arg.low is not None or arg.high is not None):
        parts.append(f"from {arg.low or 0} to {MAX_ID if arg.high is None else arg.high}")
    return "; ".join(parts)[:2000] or None


def _optional(arg: Arg) -> bool:
    return arg.type is ArgType.PARAMETERS or (not arg.positional and not arg.required)


def request_modal(
    kinds: Sequence[KindSpec], spec: KindSpec | None, prefill: Prefill, metadata: str
) -> dict[str, Any]:
    """The request form: the action to pick and, once ``spec`` is picked, its fields (filled
    from ``prefill``) and a reason; ``metadata`` (JSON, at most 3,000 characters) is where
    the request was asked from, carried to the submission."""
    blocks: list[Block] = [
        InputBlock(
            block_id=KIND_BLOCK,
            label="Action",
            dispatch_action=True,
            element=StaticSelectElement(
                action_id=KIND_ACTION,
                placeholder="Pick an action",
                options=[_kind_option(k) for k in kinds],
                initial_option=_kind_option(spec) if spec else None,
            ),
        )
    ]
    if spec is None:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text="Its fields come next.")]))
    else:
        for arg in spec.grammar:
            blocks.append(
                InputBlock(
                    block_id=block_id(arg),
                    label=_label(arg),
                    dispatch_action=arg.name == "namespace" or arg.type is ArgType.WORKLOAD,
                    element=_element(arg, prefill.values.get(arg.name)),
                    hint=_hint(arg),
                    optional=_optional(arg),
                )
            )
        text = prefill.decision or "Pick the namespace and the workload to see who must approve."
        blocks.append(
            ContextBlock(block_id=DECISION_BLOCK, elements=[MarkdownTextObject(text=text[:3000])])
        )
        reason = PlainTextInputElement(
            action_id=VALUE_ACTION, multiline=True, initial_value=prefill.reason, max_length=2900
        )
        blocks.append(
            InputBlock(
                block_id=REASON_BLOCK,
                label="Reason",
                element=reason,
                optional=not prefill.reason_required,
                hint="Why, for the approvers and the audit trail"
                + ("" if prefill.reason_required else " (some rules require one)"),
            )
        )
    view = View(
        type="modal",
        callback_id=MODAL_CALLBACK,
        title="Request an operation",
        submit="Submit" if spec else None,
        close="Cancel",
        blocks=blocks,
        private_metadata=metadata[:3000],
    )
    return view.to_dict()


def options(found: Sequence[tuple[str, str]], query: str) -> list[dict[str, Any]]:
    """The options answering a select's search: ``(value, text)`` pairs whose text contains
    ``query`` (case-insensitively), at most :data:`MAX_OPTIONS`."""
    wanted = query.strip().lower()
    chosen = [(v, t) for v, t in found if wanted in t.lower()][:MAX_OPTIONS]
    return [_option(v, t).to_dict() for v, t in chosen]


def state_value(state: Mapping[str, Any]) -> str | None:
    """The value of one element of a view's ``state.values`` (a select's chosen option, a text
    or a number), stripped; None when empty."""
    option = state.get("selected_option")
    raw = option.get("value") if isinstance(option, dict) else state.get("value")
    text = str(raw).strip() if raw is not None else ""
    return text or None


def form_values(view: Mapping[str, Any]) -> dict[str, str]:
    """``{block_id: value}`` of a submitted form's non-empty fields."""
    found: dict[str, str] = {}
    for block, elements in ((view.get("state") or {}).get("values") or {}).items():
        for element in (elements or {}).values():
            value = state_value(element) if isinstance(element, dict) else None
            if value is not None:
                found[str(block)] = value
    return found


def field_problems(spec: KindSpec, values: Mapping[str, str]) -> dict[str, str]:
    """``{block_id: message}`` for each field of ``spec`` whose value the grammar refuses, or
    that is required and empty (Slack checks that too, in the person's browser)."""
    errors: dict[str, str] = {}
    for arg in spec.grammar:
        text = values.get(block_id(arg))
        if text is None:
            if not _optional(arg):
                errors[block_id(arg)] = "Fill this in."
            continue
        try:
            for word in _words_of(arg, text):
                arg.convert(word)
        except ValueError as exc:
            errors[block_id(arg)] = str(exc)[:150]
    return errors


def _words_of(arg: Arg, text: str) -> list[str]:
    """The words ``text`` makes for ``arg``: ``key=value`` pairs split as a shell does."""
    if arg.type is ArgType.PARAMETERS:
        try:
            return shlex.split(text)
        except ValueError as exc:
            raise ValueError(f"cannot read the parameters ({exc})") from exc
    return [text]


def form_words(spec: KindSpec, values: Mapping[str, str]) -> list[str]:
    """The ``/ops`` words of a submitted form (``["restart", "deploy/web", "-n", "shop",
    "--reason", "OOM"]``), for ``bot.grammar.parse_words``: arguments in the grammar's order,
    an option where it has a value."""
    words = [spec.word]
    for arg in spec.grammar:
        text = values.get(block_id(arg))
        if text is None:
            continue
        given = _words_of(arg, text)
        words += given if arg.positional else [arg.flags[0], *given]
    reason = values.get(REASON_BLOCK)
    if reason is not None:
        words.append(f"--reason={reason}")
    return words


def error_block(spec: KindSpec, message: str) -> str:
    """The block a grammar's refusal (``message``, usage line cut) is shown on: the field whose
    flag or name it mentions, else the action."""
    for arg in spec.grammar:
        if any(flag in message for flag in arg.flags) or arg.name in message:
            return block_id(arg)
    return KIND_BLOCK


def metadata(**origin: str | None) -> str:
    """The form's ``private_metadata``: where it was opened from, as JSON."""
    return json.dumps({k: v for k, v in origin.items() if v})


def read_metadata(text: str | None) -> dict[str, str]:
    """The origin :func:`metadata` wrote; empty for anything else."""
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def submitted_title(words: Sequence[str]) -> str:
    """How the filed form is named in answers: the command it amounts to."""
    return f"`/ops {escape(shlex.join(words))}`"


def decision_text(explained: Explained) -> tuple[str, bool]:
    """What the gate would decide, for the form (mrkdwn, escaped), and whether the rule requires
    a reason the form does not have yet."""
    decision = explained.decision
    needs_reason = decision.reason is DecisionReason.REASON_REQUIRED
    if decision.outcome is Outcome.AUTO:
        lines = [":white_check_mark: *Approved by the policy*: runs once submitted."]
    elif decision.outcome is Outcome.DENY and not needs_reason:
        lines = [f":no_entry: *Refused*: {escape(decision.message)}"]
    elif needs_reason:
        lines = [f":memo: *A reason is required*: {escape(decision.message)}"]
    else:
        groups = ", ".join(escape(g) for g in decision.approver_groups) or "the approvers"
        count = decision.min_approvals
        lines = [
            f":hourglass_flowing_sand: *Needs {count} approval{'s' * (count != 1)}* from {groups}"
        ]
    if decision.freeze:
        lines.append(f":snowflake: Freeze in force: {escape(decision.freeze)}")
    limits = decision.settings.get("limits")
    if isinstance(limits, dict) and limits:
        shown = ", ".join(
            f"{escape(str(k)).replace('_', ' ')} {escape(str(v))}"
            for k, v in limits.items()
            if v is not None
        )
        lines += [f"Limits: {shown}"] if shown else []
    if explained.preview is not None:
        lines += [f"• {escape(line)}" for line in explained.preview.lines[:5]]
    elif explained.preview_error:
        lines.append(f":warning: {escape(explained.preview_error)}")
    return "\n".join(lines), needs_reason
