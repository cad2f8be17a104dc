"""Real tool-source servers for tests: an MCP server (the SDK's, streamable HTTP or stdio) and an
HTTP service with an OpenAPI document (FastAPI), each serving on 127.0.0.1 from a thread.

They record what they receive (idempotency keys, headers) so tests can assert on it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, Response
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel


@dataclass
class Seen:
    """What a server received: idempotency keys per tool, Authorization headers, call counts."""

    keys: dict[str, list[str]] = field(default_factory=dict)
    auth: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)

    def record(self, tool: str, key: str | None) -> None:
        self.calls[tool] += 1
        if key is not None:
            self.keys.setdefault(tool, []).append(key)


def build_mcp(seen: Seen, release: Path | None = None) -> MCPServer:
    server: MCPServer = MCPServer("shop")
    read_only = ToolAnnotations(read_only_hint=True)

    def meta_key(ctx: Context) -> str | None:
        meta = ctx.request_context.meta or {}
        request = ctx.request_context.request
        if request is not None and hasattr(request, "headers"):
            seen.auth.append(request.headers.get("authorization", ""))
        value = meta.get("idempotency_key")
        return str(value) if value is not None else None

    @server.tool(annotations=read_only)
    def add(a: int, b: int, ctx: Context) -> dict[str, int]:
        """Add two integers."""
        seen.record("add", meta_key(ctx))
        return {"sum": a + b}

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True))
    def create_ticket(title: str, ctx: Context) -> dict[str, Any]:
        """Open a ticket."""
        key = meta_key(ctx)
        seen.record("create_ticket", key)
        return {"ticket": f"T-{len(seen.keys['create_ticket'])}", "title": title}

    @server.tool()
    def flaky(ctx: Context) -> CallToolResult:
        """Fails twice (retryable), then answers."""
        seen.record("flaky", meta_key(ctx))
        if seen.calls["flaky"] <= 2:
            return CallToolResult(
                content=[TextContent(type="text", text="busy, try again")], is_error=True, _meta={"retryable": True}
            )
        return CallToolResult(content=[TextContent(type="text", text="done")])

    @server.tool()
    def broken(ctx: Context) -> str:
        """Always fails."""
        seen.record("broken", meta_key(ctx))
        raise ValueError("the warehouse is closed")

    @server.tool()
    def leak(ctx: Context) -> CallToolResult:
        """Fails with the caller's credentials in its message (a careless server)."""
        seen.record("leak", meta_key(ctx))
        request = ctx.request_context.request
        auth = request.headers.get("authorization", "") if request is not None else ""
        return CallToolResult(content=[TextContent(type="text", text=f"denied for {auth}")], is_error=True)

    @server.tool()
    async def hold(ctx: Context) -> dict[str, Any]:
        """Records its key, then holds until released (a worker may die meanwhile)."""
        seen.record("hold", meta_key(ctx))
        while release is not None and not release.exists():
            await asyncio.sleep(0.05)
        return {"held": len(seen.keys["hold"])}

    return server


class _Order(BaseModel):
    sku: str
    qty: int = 1


def build_openapi(seen: Seen) -> FastAPI:
    app = FastAPI(title="billing")

    @app.get("/api/items/{item_id}", operation_id="getItem")
    def get_item(item_id: str, verbose: bool = False, idempotency_key: str | None = Header(None)) -> dict[str, Any]:
        """Look up an item."""
        seen.record("getItem", idempotency_key)
        return {"id": item_id, "price": 7, "verbose": verbose}

    @app.post("/api/orders", operation_id="createOrder")
    def create_order(order: _Order, idempotency_key: str | None = Header(None)) -> dict[str, Any]:
        """Place an order."""
        seen.record("createOrder", idempotency_key)
        return {"order": f"O-{seen.calls['createOrder']}", "sku": order.sku, "qty": order.qty}

    @app.get("/api/unstable", operation_id="unstable")
    def unstable(response: Response) -> dict[str, Any]:
        seen.record("unstable", None)
        if seen.calls["unstable"] == 1:
            response.status_code = 503
            return {"error": "try later"}
        return {"ok": True}

    @app.post("/api/reject", operation_id="reject")
    def reject(response: Response, idempotency_key: str | None = Header(None)) -> dict[str, Any]:
        seen.record("reject", idempotency_key)
        response.status_code = 400
        return {"error": "bad order"}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """An ASGI app under uvicorn on 127.0.0.1 in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"
