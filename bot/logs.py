"""Logging for ``opsgate serve``: text for a terminal, or one JSON object per line.

``OPSGATE_LOG_FORMAT=json`` (python-json-logger) writes ``timestamp`` (ISO 8601, UTC), ``level``,
``logger``, ``message``, and where there is one: ``request_id`` and ``grant_id`` (opsgate names
them ``request #N`` and ``grant #N`` in its messages, and these are read from there), and for the
work a Slack listener handed off (:class:`bot.work.Workers`, through :func:`log_context`) its
``reference`` (the one its failure answer gives the person), ``actor`` (the Slack user) and
``action`` (the command's); ``exc_info`` for an exception.
uvicorn's and APScheduler's loggers go through the same handler (``uvicorn.run(...,
log_config=None)``); APScheduler's INFO chatter ("Adding job tentatively", "Running job", …) and
the access log lines of the probes and of ``/metrics`` are dropped.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("request_id", "grant_id", "reference", "action", "actor")
"""The optional fields of a JSON line."""

HANDLER_NAME = "opsgate"
"""The name of the root logger's handler :func:`configure_logging` installs."""

QUIET_PATHS = ("/healthz", "/readyz", "/metrics")
"""Paths whose successful access log lines are dropped: probes and scrapes, every few seconds."""

_REQUEST = re.compile(r"\brequest #(\d+)")
_GRANT = re.compile(r"\bgrant #(\d+)")
_CONTEXT: ContextVar[dict[str, str]] = ContextVar("opsgate_log_context", default={})  # noqa: B039


@contextmanager
def log_context(**fields: str | int | None) -> Iterator[None]:
    """Within the block (this thread or task), every log line carries ``fields`` (those not
    None), e.g. ``log_context(reference="3f2a…", actor="U0DEV1")``."""
    values = {k: str(v) for k, v in fields.items() if v is not None}
    token = _CONTEXT.set({**_CONTEXT.get(), **values})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    """Adds the fields of :func:`log_context`, and ``request_id``/``grant_id`` named in the
    message, to each record that does not carry them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        message = record.getMessage()
        for key, pattern in (("request_id", _REQUEST), ("grant_id", _GRANT)):
            found = pattern.search(message)
            if found and not hasattr(record, key):
                setattr(record, key, int(found.group(1)))
        return True


class QuietAccessFilter(logging.Filter):
    """Drops uvicorn's access lines for a 2xx answer to one of :data:`QUIET_PATHS`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
            return True
        path, status = str(args[2]).split("?")[0], args[4]
        return not (path in QUIET_PATHS and isinstance(status, int) and 200 <= status < 300)


class _Stderr:
    """``sys.stderr`` as it is when a line is written (not when logging was configured)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def json_formatter() -> JsonFormatter:
    """The JSON formatter: ``timestamp``, ``level``, ``logger``, ``message``, then the extras."""
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
    )


def configure_logging(
    log_format: LogFormat, *, level: int = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record at ``level`` or above (opsgate's, uvicorn's, APScheduler's, the
    libraries') to ``stream`` (default: stderr) in ``log_format``; replaces the handler an
    earlier call installed. Returns the handler."""
    handler = logging.StreamHandler(stream or _Stderr())
    handler.setFormatter(
        json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    handler.addFilter(ContextFilter())
    handler.addFilter(QuietAccessFilter())
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)  # configured again: ours only, others' (pytest's) stay
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.getLogger("apscheduler").setLevel(max(level, logging.WARNING))
    return handler
