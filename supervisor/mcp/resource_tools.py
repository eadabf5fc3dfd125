"""Resource tools: list and status, recent events (read); start, stop, restart (control).

The two groups are registered separately: `[mcp] resources_control` is off by default,
and an agent without it never sees a tool that could stop a service.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from supervisor.mcp.link import DaemonLink
from supervisor.mcp.tools import CHANGE, READ, Name, refusals


def add_resource_read_tools(server: MCPServer, link: DaemonLink) -> None:
    """Register resources_list, resource_status and resource_events on `server`."""

    @server.tool(annotations=READ)
    async def resources_list() -> dict[str, Any]:
        """List managed resources: name, kind, state, liveness, restarts, detail."""
        with refusals():
            return {"resources": await link.call(lambda c: c.resources())}

    @server.tool(annotations=READ)
    async def resource_status(name: Name) -> dict[str, Any]:
        """One resource's state, liveness, pid or container, endpoint and detail."""
        with refusals():
            return await link.call(lambda c: c.resource(name))

    @server.tool(annotations=READ)
    async def resource_events(
        name: Name | None = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        """Recent state changes, newest last; only those of `name` if given."""
        with refusals():
            answer = await link.call(lambda c: c.recent_events())
        events = [e for e in answer["events"] if name is None or e.get("name") == name]
        return {"events": events[-limit:]}


def add_resource_control_tools(server: MCPServer, link: DaemonLink) -> None:
    """Register resource_start, resource_stop and resource_restart on `server`."""

    @server.tool(annotations=CHANGE)
    async def resource_start(name: Name) -> dict[str, Any]:
        """Start a resource now (also from FATAL, EXITED or BACKOFF)."""
        with refusals():
            return await link.call(lambda c: c.start(name))

    @server.tool(annotations=CHANGE)
    async def resource_stop(name: Name) -> dict[str, Any]:
        """Stop a resource and keep it stopped."""
        with refusals():
            return await link.call(lambda c: c.stop(name))

    @server.tool(annotations=CHANGE)
    async def resource_restart(name: Name) -> dict[str, Any]:
        """Stop a resource if it runs, then start it."""
        with refusals():
            return await link.call(lambda c: c.restart(name))
