"""The daemon's `/mcp` endpoint, when `[mcp] http` is on, there is a TCP listener, and the
`mcp` extra is installed; otherwise nothing is imported (a daemon without MCP never loads
the SDK).

The tools inside the daemon reach it as `supervisor mcp` does, through the API client on
the control socket: one code path, the same validation and limits as every other client.
`[mcp]` is read at start-up; changing it needs a restart.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import structlog
from starlette.routing import BaseRoute, Route

from supervisor.config.schema import Config

log = structlog.get_logger("supervisor.daemon")


@asynccontextmanager
async def open_mcp_routes(config: Config) -> AsyncIterator[Sequence[BaseRoute]]:
    """The routes to mount on the TCP listener (none when MCP over HTTP is off)."""
    if not config.mcp.http or config.daemon.http is None:
        yield ()
        return
    if importlib.util.find_spec("mcp") is None:
        log.info("mcp_http_disabled", reason="the mcp extra is not installed")
        yield ()
        return
    from supervisor.api.client import Client
    from supervisor.mcp.http import open_mcp_endpoint
    from supervisor.mcp.link import DaemonLink

    socket_path = config.daemon.socket_path
    link = DaemonLink(lambda: Client.connect(socket_path=socket_path))
    async with open_mcp_endpoint(config.mcp, link) as endpoint:
        yield [Route("/mcp", endpoint, methods=["GET", "POST", "DELETE"])]
