"""The tool gateway: HTTP tools under /tools/<name>/..., MCP servers under /mcp/<server>."""
