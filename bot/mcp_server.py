"""``opsgate mcp``: the Model Context Protocol server, with the official ``mcp`` SDK.

One tool per request kind (``restart``, ``scale``…; their input schemas are the HTTP API's
request models, :mod:`bot.api.models`), plus ``get_request``, ``wait_for_request``, ``explain``
and ``list_my_grants``. Every tool calls the HTTP API at ``$OPSGATE_URL`` with the agent's
``$OPSGATE_TOKEN``, so the server has exactly the agent's rights, and nothing else: it cannot
approve, since no endpoint does. Served over stdio (the default) or streamable HTTP.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import httpx
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from bot.api.models import REQUEST_MODELS, RequestBody

INSTRUCTIONS = (
    "opsgate files Day 2 operations requests (restart, scale, rollback, access, rotate, restore) "
    "under a policy. A request may be approved by the policy at once, or need approval by "
    "people in Slack: its status is then 'pending'. Call wait_for_request with its id to wait "
    "for the decision and the result (succeeded, failed, denied, expired, cancelled). You cannot "
    "approve requests; use explain first to see what the policy would decide."
)

WAIT_STEP = 60
"""Seconds of one long poll of the API while ``wait_for_request`` waits."""

FINAL = frozenset(
    {"succeeded", "active", "failed", "unknown", "denied", "cancelled", "expired", "revoked"}
)


class Api:
    """The HTTP API at ``url`` with bearer ``token``."""

    def __init__(self, url: str, token: str) -> None:
        self._base = url.rstrip("/") + "/api/v1"
        self._headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON answer; raises :class:`ToolError` with the API's reason for a refusal."""
        try:
            async with httpx.AsyncClient(headers=self._headers, timeout=WAIT_STEP + 30) as http:
                response = await http.request(method, self._base + path, **kwargs)
        except httpx.HTTPError as exc:
            raise ToolError(f"opsgate cannot be reached: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail") or response.json().get("title")
            except ValueError:
                detail = response.text[:300]
            raise ToolError(f"opsgate refused ({response.status_code}): {detail}")
        answer: dict[str, Any] = response.json()
        return answer


def _kind_tool(kind: str, api: Api) -> tuple[Callable[..., Awaitable[dict[str, Any]]], str]:
    """The tool filing a ``kind`` request: a function whose signature is the model's fields."""
    model = REQUEST_MODELS[kind]

    async def tool(**arguments: Any) -> dict[str, Any]:
        body = {"action": kind, **{k: v for k, v in arguments.items() if v is not None}}
        return await api.call("POST", "/requests", json=body)

    parameters = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[info.annotation, info],
            default=inspect.Parameter.empty if info.is_required() else info.default,
        )
        for name, info in model.model_fields.items()
        if name != "action"
    ]
    tool.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        parameters, return_annotation=dict[str, Any]
    )
    tool.__name__ = kind
    doc = (model.__doc__ or "").strip().replace("\n   ", "")
    description = (
        f"File a {kind} request ({doc}). The policy decides: it may run at once, be refused, "
        "or wait for people's approval in Slack (status 'pending'); then call "
        "wait_for_request with the returned id."
    )
    return tool, description


def build_server(api: Api) -> MCPServer:
    """The MCP server, its tools calling ``api``."""
    server = MCPServer("opsgate", instructions=INSTRUCTIONS)
    for kind in REQUEST_MODELS:
        tool, description = _kind_tool(kind, api)
        server.add_tool(tool, name=kind, description=description)

    @server.tool()
    async def get_request(
        request_id: Annotated[int, Field(ge=1, description="the request's id")],
    ) -> dict[str, Any]:
        """A request's current status, preview, rule, approvals and result."""
        return await api.call("GET", f"/requests/{request_id}")

    @server.tool()
    async def wait_for_request(
        request_id: Annotated[int, Field(ge=1, description="the request's id")],
        timeout_seconds: Annotated[
            int, Field(ge=1, le=3600, description="how long to wait at most, in seconds")
        ] = 300,
    ) -> dict[str, Any]:
        """Wait until the request ends (succeeded, failed, denied, expired, cancelled) or the
        timeout passes, and return it. A request waiting for people's approval in Slack stays
        'pending' until someone decides; call again to keep waiting."""
        loop_left = timeout_seconds
        request = await api.call("GET", f"/requests/{request_id}")
        while request["status"] not in FINAL and loop_left > 0:
            step = min(WAIT_STEP, loop_left)
            request = await api.call("GET", f"/requests/{request_id}", params={"wait": step})
            loop_left -= step
        return request

    @server.tool()
    async def explain(request: RequestBody) -> dict[str, Any]:
        """What the policy would decide for this request (auto, approval, deny), which rule,
        who must approve, and the preview checked with a dry run. Files nothing."""
        return await api.call("POST", "/explain", json=request.model_dump(exclude_none=True))

    @server.tool()
    async def list_my_grants() -> dict[str, Any]:
        """Your active access grants (from access requests), the soonest to end first."""
        return await api.call("GET", "/grants")

    return server


def serve(transport: str, *, host: str = "127.0.0.1", port: int = 8765) -> int:
    """Serve MCP over ``transport`` (``stdio`` or ``streamable-http``) for the agent of
    ``$OPSGATE_TOKEN`` at ``$OPSGATE_URL``; returns the exit code (2: not configured)."""
    url, token = os.environ.get("OPSGATE_URL", ""), os.environ.get("OPSGATE_TOKEN", "")
    if not url or not token:
        print("opsgate mcp: set OPSGATE_URL and OPSGATE_TOKEN", file=sys.stderr)
        return 2
    server = build_server(Api(url, token))
    if transport == "streamable-http":
        server.run("streamable-http", host=host, port=port)
    else:
        server.run("stdio")
    return 0
