"""Durations as people type them (``30m``, ``2h``, ``1h30m``, ``1d``, ``90s``) and as opsgate
writes them: the one parser and the one formatter, shared by the ``/ops`` grammar, the policy
(``pending_ttl``, ``max_duration`` …) and every message that names a duration."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def parse_duration(text: str) -> int:
    """Parse ``30m``, ``2h``, ``1h30m``, ``1d``, ``90s`` into seconds (an int > 0).

    Raises ``ValueError`` with the accepted forms when ``text`` is not one of them.
    """
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"'{text}' is not a duration; use forms like 30m, 2h, 1h30m")
    parts = {k: int(v) for k, v in match.groupdict(default="0").items()}
    seconds = parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    if seconds <= 0:
        raise ValueError(f"'{text}' is not a positive duration")
    return seconds


def format_duration(seconds: float, *, exact: bool = True) -> str:
    """``5400`` → ``1h30m``, in the form :func:`parse_duration` reads (``0`` → ``0s``).

    ``seconds`` is rounded down to a whole second (a negative value counts as 0). ``exact``
    (default) keeps every unit, so that ``parse_duration(format_duration(s)) == s``; with
    ``exact=False`` the seconds are left out from one hour on, as a countdown reads
    (``3661`` → ``1h1m``: a grant's time left, its duration in a message).
    """
    total = max(int(seconds), 0)
    rest, out = total, ""
    for unit, size in _UNITS:
        if unit == "s" and not exact and total >= 3600:
            break
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out or "0s"


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
"""A duration field of a policy file, such as ``30m`` or ``1h30m`` (see :func:`parse_duration`)."""
