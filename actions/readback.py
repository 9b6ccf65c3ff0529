"""Reading a change back after a write that got no answer (:class:`~actions.errors.MaybeApplied`).

A write whose answer timed out, or whose connection dropped after it was sent, may or may not have
taken effect. Reporting it failed invites a second, duplicate change; re-sending it blindly may
apply it twice. So the kind reads the object back and judges it with its own test:

* the change is there: carry on as if the write had answered (the summary says it was read back);
* it is not there and the object is as before: ``TemporaryError`` saying nothing was changed and
  that it is safe to ask again;
* it cannot be told (the read fails too, or the object is neither as before nor as asked):
  :class:`~actions.errors.OutcomeUnknown` with the object's current state, "may have taken
  effect: check before retrying".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from actions.errors import ActionError, MaybeApplied, OutcomeUnknown, TemporaryError

READ_ATTEMPTS = 2
"""Reads made before the outcome is called unknown (only a ``TemporaryError`` is read again)."""

CONFIRMED = "the API server did not answer in time; read back, the change is there"
"""What a kind adds to its summary when the change was confirmed by reading it back."""


class Seen(Enum):
    """What the object read back shows."""

    APPLIED = "applied"
    NOT_APPLIED = "not applied"
    UNCLEAR = "unclear"


def read_back(
    error: MaybeApplied,
    *,
    change: str,
    subject: str,
    read: Callable[[], dict[str, Any]],
    judge: Callable[[dict[str, Any]], Seen],
    state: Callable[[dict[str, Any]], Mapping[str, Any]],
    sleep: Callable[[float], None] = time.sleep,
    pause: float = 1.0,
) -> dict[str, Any]:
    """Decide whether the write behind ``error`` took effect by reading the object back.

    ``change`` names the change for people (``the restart``), ``subject`` the object
    (``deployment/web in shop``). ``read`` returns the object's JSON (the port's errors; it is
    tried :data:`READ_ATTEMPTS` times, ``pause`` seconds apart, while it raises
    ``TemporaryError``); ``judge`` says what the JSON shows; ``state`` gives its current state
    for people and the audit trail (``{"restartedAt": "…", "ready": "2/3"}``).

    Returns the JSON read when the change is there. Raises ``TemporaryError`` (nothing was
    changed, safe to ask again) when it is not, and ``OutcomeUnknown`` (``facts``: the current
    state, when it could be read) when it cannot be told.
    """
    obj: dict[str, Any] | None = None
    failure: ActionError | None = None
    for attempt in range(READ_ATTEMPTS):
        try:
            obj = read()
            break
        except TemporaryError as exc:
            failure = exc
            if attempt < READ_ATTEMPTS - 1:
                sleep(pause)
        except ActionError as exc:
            failure = exc
            break
    if obj is None:
        raise OutcomeUnknown(
            f"{error.reason}, and reading {subject} back failed too ({failure}): {change} may "
            "have taken effect; check before retrying",
            facts={"read_back_error": str(failure), "write_error": error.reason},
        )
    seen = judge(obj)
    if seen is Seen.APPLIED:
        return obj
    current = dict(state(obj))
    now = describe(current)
    if seen is Seen.NOT_APPLIED:
        raise TemporaryError(
            f"{error.reason}. Read back, {subject} does not have {change} ({now}): nothing was "
            "changed; it is safe to ask again",
            delay=5.0,
        )
    raise OutcomeUnknown(
        f"{error.reason}. Read back, {subject} is neither as before nor as asked ({now}): "
        f"{change} may have taken effect; check before retrying",
        facts={"current": current, "write_error": error.reason},
    )


def describe(state: Mapping[str, Any]) -> str:
    """``restartedAt 2026-11-21T03:04:05Z, ready 2/3``; ``nothing`` for an empty state."""
    return ", ".join(f"{key} {value}" for key, value in state.items()) or "nothing"
