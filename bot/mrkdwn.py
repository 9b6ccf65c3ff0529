"""Slack mrkdwn escaping: what a person typed is shown as text, never read as markup.

Slack reads ``&``, ``<`` and ``>`` as control characters in every mrkdwn text, a message's
``text`` included: ``<!channel>`` and ``<!here>`` ping a whole channel, ``<@U123>`` pings a person,
``<https://x|payments dashboard>`` is a link whose label hides where it goes. Slack's "Escaping
text" (https://api.slack.com/reference/surfaces/formatting#escaping) says to send those three
characters, and only them, as ``&amp;``, ``&lt;`` and ``&gt;``; text Slack delivers (a slash
command's ``text``, a message event's) arrives escaped the same way.

approvals/ and actions/ write plain text; the builders in bot/ escape it where they assemble
mrkdwn: :func:`escape` for what a person typed or a field of a request, :func:`escape_composed`
for a sentence approvals/ or actions/ wrote (which may quote input) and which may name a person
where :data:`OPSGATE_MENTIONS` says. Asterisks, underscores and backticks are left alone: they
can only format, and an approver sees them as the requester typed them.
"""

from __future__ import annotations

import re

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ENTITY = re.compile(r"&(amp|lt|gt);")
_CHARACTERS = {"amp": "&", "lt": "<", "gt": ">"}

_PERSON = r"<@[UW][A-Z0-9]{2,}>"
OPSGATE_MENTIONS = re.compile(
    # approvals.grants (a grant ended early), also as approvals.gate records it on the request
    rf"(?:access ended: )?revoked early by {_PERSON}"
    # approvals.gate: a click on a request someone already decided
    rf"|Request #\d+ is already [a-z]+ by {_PERSON}"
    # approvals.extend: the preview of an extension names the grantee
    rf"|Extend grant \*#\d+\* \([^<>&]* for {_PERSON}\)"
)
"""The beginnings of the sentences opsgate writes that name a person with a mention (``<@U…>``):
:func:`escape_composed` keeps such a beginning as it is. Each is anchored at the start of the text
and holds nothing a person typed but a Slack user ID, so that no input can produce one; a
sentence that changes wording loses its mention (shown as text), never its escaping."""


def escape(text: str) -> str:
    """``text`` for a mrkdwn field: ``&``, ``<`` and ``>`` replaced by ``&amp;``, ``&lt;`` and
    ``&gt;`` (Slack's "Escaping text"), so that it cannot ping, link or format a date."""
    return text.translate(_ESCAPES)


def unescape(text: str) -> str:
    """What a person typed, from text as Slack delivers it: ``&amp;``, ``&lt;`` and ``&gt;`` back
    to ``&``, ``<`` and ``>``, in one pass (``&amp;lt;`` is the ``&lt;`` they typed)."""
    return _ENTITY.sub(lambda match: _CHARACTERS[match.group(1)], text)


def escape_composed(text: str) -> str:
    """A sentence approvals/ or actions/ composed (plain text that may quote input: a workload
    name, a namespace, a reason), for a mrkdwn field: escaped as :func:`escape` does, except a
    beginning that matches :data:`OPSGATE_MENTIONS` (``revoked early by <@U123>: …``), whose
    mention stays a mention."""
    lead = OPSGATE_MENTIONS.match(text)
    if lead is None:
        return escape(text)
    return lead.group() + escape(text[lead.end() :])
