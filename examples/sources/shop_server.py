"""A small MCP server (the `mcp` SDK's) over streamable HTTP, for the README's tool-source example.

python examples/sources/shop_server.py [PORT]      # http://127.0.0.1:9331/mcp by default
"""

import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations

server: MCPServer = MCPServer("shop")
tickets: dict[str, str] = {}  # idempotency key -> ticket id: a retried call opens no second ticket


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> dict[str, int]:
    """Add two integers."""
    return {"sum": a + b}


@server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True))
def create_ticket(title: str, ctx: Context) -> dict[str, str]:
    """Open a support ticket with this title; returns its id."""
    key = str((ctx.request_context.meta or {}).get("idempotency_key", ""))
    ticket = tickets.setdefault(key or f"anon-{len(tickets)}", f"T-{len(tickets) + 1}")
    return {"ticket": ticket, "title": title}


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 9331)
