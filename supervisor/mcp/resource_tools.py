"""Resource tools: list and status, recent events, log tail (read); start, stop, restart
(control).

The two groups are registered separately: `[mcp] resources_control` is off by default,
and an agent without it never sees a tool that could stop a service. The log tail is
bounded twice for the agent's context: at most `MAX_LOG_LINES` lines are asked for, and
only the last `MAX_LOG` bytes of the answer are kept as it arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from supervisor.mcp.link import DaemonLink
from supervisor.mcp.tools import CHANGE, READ, Name, refusals

MAX_LOG = 64 << 10  # bytes of a log tail handed to the agent
MAX_LOG_LINES = 1000


def last_bytes(pieces: Iterable[bytes], limit: int = MAX_LOG) -> tuple[bytes, bool]:
    """The last `limit` bytes of `pieces`, read to the end, from a line's start if any were
    cut; whether any were."""
    kept = bytearray()
    cut = False
    for piece in pieces:
        kept += piece
        if len(kept) > limit:
            del kept[: len(kept) - limit]
            cut = True
    if cut and (newline := kept.find(b"\n", 0, len(kept) - 1)) >= 0:
        del kept[: newline + 1]  # no half line at the top
    return bytes(kept), cut


def add_resource_read_tools(server: MCPServer, link: DaemonLink) -> None:
    """Register resources_list, resource_status, resource_events and resource_logs."""

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

    @server.tool(annotations=READ)
    async def resource_logs(
        name: Name,
        stream: Literal["stdout", "stderr"] = "stdout",
        lines: Annotated[int, Field(ge=1, le=MAX_LOG_LINES)] = 100,
    ) -> dict[str, Any]:
        """The last lines a resource's program printed on stdout or stderr (at most 64 KiB,
        the newest kept)."""
        with refusals():
            data, cut = await link.call(
                lambda c: last_bytes(c.logs(name, stream=stream, lines=lines))
            )
        return {
            "name": name,
            "stream": stream,
            "text": data.decode(errors="replace"),
            "truncated": cut,
        }


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
