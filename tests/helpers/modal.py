"""Driving the request form (a Slack modal) of the running bot as Slack does: the shortcuts,
the action select, the options loads and the submission, each a signed interaction."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fakes import slack
from tests.helpers.bot import RunningBot, wait_for


def interact(bot: RunningBot, payload: dict[str, Any]) -> httpx.Response:
    """Post a signed interaction (``payload=`` form) to the bot's Request URL."""
    response = bot.post(slack.interaction_body(payload))
    assert response.status_code == 200, response.text
    return response


def opened(bot: RunningBot, trigger_id: str) -> dict[str, Any]:
    """The view the bot opened with ``trigger_id`` (``views.open``), once it has."""
    call = wait_for(
        lambda: [
            c
            for c in bot.fake_slack.calls_of("views.open")
            if c.args.get("trigger_id") == trigger_id
        ],
        what=f"views.open with the trigger_id {trigger_id}",
    )[-1]
    assert call.response["ok"], call.response
    view: dict[str, Any] = call.response["view"]
    return view


def open_with_command(bot: RunningBot, *, user: str = "U0DEV1") -> dict[str, Any]:
    """``/ops`` with no arguments in #dev; returns the form it opened."""
    trigger = slack.new_trigger_id()
    body = slack.slash_command_body(
        "", user_id=user, response_url=bot.fake_slack.response_url(), trigger_id=trigger
    )
    answer = bot.post(body)
    assert answer.status_code == 200
    assert answer.text == ""  # nothing said in the channel: the form opens
    return opened(bot, trigger)


def pick(bot: RunningBot, view: dict[str, Any], kind: str, *, user: str = "U0DEV1") -> Any:
    """Pick the action ``kind`` in the form; returns the view the bot updated it to."""
    before = len(bot.fake_slack.calls_of("views.update"))
    interact(bot, slack.view_block_action_payload(view, "kind", "modal_kind", kind, user_id=user))
    call = wait_for(lambda: bot.fake_slack.calls_of("views.update")[before:], what="views.update")[
        -1
    ]
    assert call.args["view_id"] == view["id"]
    assert call.response["ok"], call.response
    return slack.view_of(bot.fake_slack, view["id"])


def search(
    bot: RunningBot,
    view: dict[str, Any],
    block_id: str,
    action_id: str,
    query: str,
    *,
    state: dict[str, Any] | None = None,
) -> list[str]:
    """The option values the bot answers an options load of ``action_id`` with (``state``:
    the view's ``state.values`` as Slack sends them)."""
    shown = {**view, "state": {"values": state or {}}}
    payload = slack.block_suggestion_payload(shown, block_id, action_id, query, user_id="U0DEV1")
    answer = interact(bot, payload).json()
    return [o["value"] for o in answer["options"]]


def chosen(value: str) -> dict[str, Any]:
    """A select's state after choosing ``value``."""
    return {"type": "external_select", "selected_option": {"value": value}}


def typed(value: str, kind: str = "plain_text_input") -> dict[str, Any]:
    """A text (or ``number_input``) field's state after typing ``value``."""
    return {"type": kind, "value": value}


def form_state(kind: str, **fields: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A form's ``state.values``: the action picked and ``arg_<name>`` (or ``reason``) fields."""
    values: dict[str, dict[str, Any]] = {
        "kind": {"modal_kind": {"type": "static_select", "selected_option": {"value": kind}}}
    }
    for name, state in fields.items():
        block = name if name == "reason" else f"arg_{name}"
        action = {"namespace": "modal_namespace", "workload": "modal_workload"}.get(name, "value")
        action = "modal_workload" if name == "deployment" else action
        values[block] = {action: state}
    return values


def submit_form(
    bot: RunningBot, view: dict[str, Any], values: dict[str, Any], *, user: str = "U0DEV1"
) -> dict[str, Any]:
    """Submit the form with ``values``; returns the bot's JSON answer."""
    answer = interact(bot, slack.view_submission_payload(view, values, user_id=user))
    data: dict[str, Any] = answer.json()
    return data


def blocks_by_id(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if "block_id" in b}


def choose(
    bot: RunningBot,
    view: dict[str, Any],
    block_id: str,
    action_id: str,
    value: str,
    state: dict[str, Any],
    *,
    user: str = "U0DEV1",
) -> dict[str, Any]:
    """Choose ``value`` in the form's select ``action_id`` with the form's other fields in
    ``state``; returns the view the bot updated it to."""
    before = len(bot.fake_slack.calls_of("views.update"))
    shown = {**view, "state": {"values": state}}
    payload = slack.view_block_action_payload(shown, block_id, action_id, value, user_id=user)
    interact(bot, payload)
    call = wait_for(lambda: bot.fake_slack.calls_of("views.update")[before:], what="views.update")[
        -1
    ]
    assert call.response["ok"], call.response
    return slack.view_of(bot.fake_slack, view["id"])


def context_text(view: dict[str, Any], block_id: str) -> str:
    """The text of a context block of a view."""
    block = blocks_by_id(view)[block_id]
    return " ".join(str(e.get("text", "")) for e in block["elements"])
