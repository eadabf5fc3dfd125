"""The daemon's `/mcp` endpoint, when `[mcp] http` is on, there is a TCP listener, and the
`mcp` extra is installed; otherwise nothing is imported (a daemon without MCP never loads
the SDK).

The tools inside the daemon reach it as `supervisor mcp` does, through the API client on
the control socket: one code path, the same validation and limits as every other client.
Its long-lived streams take slots of the TCP listener's stream cap (`McpEndpoint.on`).
`[mcp]` is read at start-up; changing it needs a restart.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import structlog
from starlette.routing import BaseRoute, Route

from supervisor.api.edge import StreamSlots
from supervisor.api.server import Mounts
from supervisor.config.schema import Config

log = structlog.get_logger("supervisor.daemon")


@asynccontextmanager
async def open_mcp_routes(config: Config) -> AsyncIterator[Mounts | None]:
    """What makes the routes to mount on the TCP listener (None when MCP over HTTP is off)."""
    if not config.mcp.http or config.daemon.http is None:
        yield None
        return
    if importlib.util.find_spec("mcp") is None:
        log.info("mcp_http_disabled", reason="the mcp extra is not installed")
        yield None
        return
    from supervisor.api.client import Client
    from supervisor.mcp.http import open_mcp_endpoint
    from supervisor.mcp.link import DaemonLink

    socket_path = config.daemon.socket_path
    link = DaemonLink(lambda: Client.connect(socket_path=socket_path))
    async with open_mcp_endpoint(config.mcp, link) as endpoint:

        def mounts(streams: StreamSlots) -> Sequence[BaseRoute]:
            return [Route("/mcp", endpoint.on(streams), methods=["GET", "POST", "DELETE"])]

        yield mounts
