"""A stdio MCP server for tests: ``python stdio_mcp_server.py``."""

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server: MCPServer = MCPServer("local")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def shout(text: str) -> dict[str, str]:
    """Upper-case a text."""
    return {"text": text.upper()}


if __name__ == "__main__":
    server.run("stdio")
