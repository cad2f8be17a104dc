"""duraplan's interfaces: the CLI, the HTTP API and the MCP server, over the executor and planner."""
