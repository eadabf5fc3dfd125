"""The MCP server: the daemon's sandboxes, resources and Deephaven sessions as agent tools.

`supervisor mcp` serves it over stdio and reaches the daemon through its API client
(`link`); the daemon serves the same tools at `/mcp`. Nothing here is imported unless
MCP is in use: the `mcp` SDK is an extra and loads only with this package's submodules.
"""
