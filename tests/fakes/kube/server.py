"""The HTTP side: a threading server that tracks its connections, the request handler, and what
it records and injects (requests, fault rules)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .errors import ApiError, bad_request
from .registry import JSON, MAX_HANG_SECONDS, MAX_WATCH_SECONDS, Obj

if TYPE_CHECKING:
    from .fake import FakeKubernetes


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    content_type: str | None
    body: JSON | None  # parsed JSON, or None when empty or not JSON


@dataclass(frozen=True)
class _Late:
    """How :meth:`FakeKubernetes.answer_late_next` treats a request it matched."""

    seconds: float
    apply: bool
    drop: bool
    then: Callable[[], None] | None


@dataclass
class _Rule:
    """A fault-injection rule: matches requests, applies ``count`` times."""

    count: int
    method: str | None
    path_contains: str | None
    status: Obj | None = None  # answer this Status body
    hang_seconds: float = 0.0  # sleep this long before answering
    late: _Late | None = None  # serve (or skip), then answer late or drop the connection

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and (
            self.path_contains is None or self.path_contains in path
        )


class _Server(ThreadingHTTPServer):
    """Tracks its connections so ``stop()`` can end keep-alive and hung handlers promptly."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, fake: FakeKubernetes) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._handler_threads: list[threading.Thread] = []
        self._tracking = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self._tracking:
            self._connections.add(request)
            self._handler_threads = [t for t in self._handler_threads if t.is_alive()] + [thread]
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._tracking:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self, timeout: float) -> None:
        with self._tracking:
            connections, threads = list(self._connections), list(self._handler_threads)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response and no Nagle: otherwise every keep-alive request stalls 40 ms on
    # delayed ACKs.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        raw = self._read_body()
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        content_type = self.headers.get("Content-Type")
        media_type = content_type.split(";")[0].strip().lower() if content_type else None
        body: JSON | None = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        request = RecordedRequest(
            method=method,
            path=split.path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            content_type=content_type,
            body=body,
        )
        fake._record(request)
        hang, injected = fake._take_rules(method, split.path)
        if hang:
            fake._stopping.wait(min(hang, MAX_HANG_SECONDS))
            if fake._stopping.is_set():
                self.close_connection = True
                return
        late = fake._take_late(method, split.path)
        try:
            if injected is not None:
                raise ApiError(injected["code"], injected["reason"], injected["message"])
            if late is not None and not late.apply:
                raise ApiError(
                    504,
                    "Timeout",
                    "Timeout: request did not complete within the allotted timeout",
                )
            fake._authorize(self.headers.get("Authorization"))
            if fake.rbac is not None:  # RBAC enforcement: tests/fakes/kube_rbac.py
                fake.rbac.check(method, split.path, query, body)
            if raw and body is None:
                raise bad_request("the request body is not valid JSON")
            code, answer = fake._dispatch(
                method, split.path, query, media_type, body, self.headers.get("Accept", "")
            )
        except ApiError as error:
            code, answer = error.code, error.body
        except Exception as exc:  # noqa: BLE001 (a bug in the fake must answer, not hang)
            internal = ApiError(500, "InternalError", f"Internal error occurred: {exc!r}", {})
            code, answer = internal.code, internal.body
        if answer is _WATCH:
            self._stream_watch(query)
            return
        if late is not None:
            if late.then is not None:
                late.then()
            fake._stopping.wait(min(late.seconds, MAX_HANG_SECONDS))
            if late.drop or fake._stopping.is_set():
                self.close_connection = True
                return
            with contextlib.suppress(OSError):  # the client may have given up long ago
                self._send_json(code, answer)
            return
        self._send_json(code, answer)

    def _send_json(self, code: int, answer: JSON) -> None:
        """Send ``answer`` as JSON, or as ``text/plain`` when it is a ``str`` (``pods/log``)."""
        text = isinstance(answer, str)
        payload = answer.encode() if text else json.dumps(answer, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _stream_watch(self, query: Mapping[str, str]) -> None:
        """An empty watch: no events, ends after ``timeoutSeconds`` (capped) or on stop."""
        try:
            seconds = float(query.get("timeoutSeconds") or MAX_WATCH_SECONDS)
        except ValueError:
            seconds = MAX_WATCH_SECONDS
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        self.server.fake._stopping.wait(min(seconds, MAX_WATCH_SECONDS))
        with contextlib.suppress(OSError):
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        self.close_connection = True


_WATCH: Obj = {"watch": True}  # sentinel answer of _dispatch
