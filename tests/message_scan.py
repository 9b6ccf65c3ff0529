"""The scan for what a person should never read in Slack: ``None``, a Python repr (``{'``,
``[]``) or a ``Traceback``, in every message the bot sends (issue 13).

:func:`leaks` reads the texts of a recorded call (``text`` and every string inside ``blocks``,
``view`` and ``attachments``: the words Slack shows, not the JSON around them); the autouse
fixture in ``tests/conftest.py`` runs it over every call :class:`tests.fakes.slack.FakeSlack`
recorded (Web API and ``response_url``) and every answer the bot gave Slack over HTTP, and
fails the test that produced one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

FORBIDDEN = re.compile(r"\bNone\b|\{'|\[\]|Traceback")
MESSAGE_FIELDS = ("text", "blocks", "view", "attachments")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in ("action_id", "block_id", "value", "callback_id", "private_metadata"):
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _parsed(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def message_texts(args: dict[str, Any]) -> Iterator[str]:
    """The words a person reads in a message the bot sent (``args`` of a recorded call, or a
    JSON answer's body)."""
    for field in MESSAGE_FIELDS:
        if field in args:
            yield from _strings(_parsed(args[field]))


def leaks(args: dict[str, Any]) -> list[str]:
    """The texts of ``args`` that show ``None``, a Python repr or a traceback."""
    return [text for text in message_texts(args) if FORBIDDEN.search(text)]
