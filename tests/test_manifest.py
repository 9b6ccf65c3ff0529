"""manifest.yml asks Slack for what the bot uses: every Web API method called in bot/ has its
scope, every event a listener handles is subscribed, and every Request URL is /slack/events."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent

METHOD_SCOPES: dict[str, set[str]] = {
    "chat_postMessage": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "chat_update": {"chat:write"},
    # a mention's channel name, public or private (incident channels are matched by name)
    "conversations_info": {"channels:read", "groups:read"},
    "usergroups_users_list": {"usergroups:read"},
    "views_publish": set(),  # the App Home tab; no scope, but home_tab_enabled
    "views_open": set(),  # the request form; no scope, a trigger_id
    "views_update": set(),
    "chat_getPermalink": set(),  # the link to the alert a request form was opened from
}
"""The bot token scopes each Web API method needs (Slack's method reference)."""

_CALL = re.compile(r"\.(chat_[A-Za-z]+|conversations_[a-z_]+|usergroups_[a-z_]+|views_[a-z_]+)\(")


def manifest() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert isinstance(data, dict)
    return data


def methods_called() -> set[str]:
    return {m for path in (ROOT / "bot").rglob("*.py") for m in _CALL.findall(path.read_text())}


def test_every_method_the_bot_calls_has_its_scope() -> None:
    called = methods_called()
    assert {"chat_postMessage", "chat_update", "views_publish"} <= called
    unknown = called - METHOD_SCOPES.keys()
    assert not unknown, f"add the scopes of {sorted(unknown)} to METHOD_SCOPES and manifest.yml"
    scopes = set(manifest()["oauth_config"]["scopes"]["bot"])
    needed = set().union(*(METHOD_SCOPES[m] for m in called))
    assert needed <= scopes, f"manifest.yml lacks {sorted(needed - scopes)}"
    assert "commands" in scopes


def test_the_events_the_listeners_handle_are_subscribed() -> None:
    source = (ROOT / "bot" / "listeners" / "events" / "__init__.py").read_text()
    handled = set(re.findall(r'app\.event\("([a-z_]+)"\)', source))
    assert handled == {"app_mention", "app_home_opened"}
    settings = manifest()["settings"]
    assert set(settings["event_subscriptions"]["bot_events"]) == handled
    assert "app_mentions:read" in manifest()["oauth_config"]["scopes"]["bot"]
    assert manifest()["features"]["app_home"]["home_tab_enabled"] is True


def test_commands_interactivity_and_events_share_one_request_url() -> None:
    data = manifest()
    [command] = data["features"]["slash_commands"]
    assert command["command"] == "/ops"
    urls = {
        command["url"],
        data["settings"]["event_subscriptions"]["request_url"],
        data["settings"]["interactivity"]["request_url"],
        data["settings"]["interactivity"]["message_menu_options_url"],
    }
    assert len(urls) == 1
    assert urls.pop().endswith("/slack/events")
    assert data["settings"]["interactivity"]["is_enabled"] is True


def test_the_request_form_shortcuts_are_declared() -> None:
    source = (ROOT / "bot" / "listeners" / "modal.py").read_text()
    declared = {s["callback_id"]: s["type"] for s in manifest()["features"]["shortcuts"]}
    assert declared == {"ops_request_shortcut": "global", "ops_from_message": "message"}
    for callback_id in declared:
        assert f'"{callback_id}"' in source
    assert all(len(s["description"]) <= 150 for s in manifest()["features"]["shortcuts"])
