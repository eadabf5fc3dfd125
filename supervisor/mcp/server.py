"""The MCP server: the tool groups `[mcp]` enables, and the stdio transport.

Over stdio one process is one MCP session, so it owns one `Holds`: when stdin reaches
EOF (the agent went away) or a SIGTERM/SIGINT arrives, every sandbox session it still
holds is released before the process exits.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import anyio
import structlog
import trio
from mcp.server.mcpserver import Context, MCPServer

from supervisor import __version__
from supervisor.config.mcp import McpConfig
from supervisor.mcp.deephaven_tools import add_deephaven_tools
from supervisor.mcp.documents import add_environment_documents, add_resource_documents
from supervisor.mcp.holds import Holds
from supervisor.mcp.link import DaemonLink
from supervisor.mcp.resource_tools import add_resource_control_tools, add_resource_read_tools
from supervisor.mcp.sandbox_tools import add_sandbox_tools

log = structlog.get_logger("supervisor.mcp")

INSTRUCTIONS = (
    "Tools of a supervisor-daemon. sandbox_*: acquire a session in an environment, run "
    "commands and move files in its sandbox, release it when done (sessions still held "
    "are released when this connection ends). resource_*: the daemon's managed services. "
    "session_* and sessions_list: Deephaven Community sessions from deephaven environments. "
    "Resources supervisor://environments and supervisor://resources[/NAME] hold the same "
    "lists as JSON."
)


def build_server(
    config: McpConfig, link: DaemonLink, holds_for: Callable[[Context], Holds | None]
) -> MCPServer:
    """An MCP server with the tool groups `config` enables."""
    server: MCPServer = MCPServer(
        "supervisor-daemon", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )
    if config.sandboxes:
        add_sandbox_tools(server, link, holds_for)
        add_environment_documents(server, link)
    if config.resources_read:
        add_resource_read_tools(server, link)
        add_resource_documents(server, link)
    if config.resources_control:
        add_resource_control_tools(server, link)
    if config.deephaven:
        add_deephaven_tools(server, link, holds_for)
    return server


async def serve_stdio(config: McpConfig, link: DaemonLink) -> None:
    """Serve MCP on stdin/stdout until EOF or a signal; then release what was held."""
    holds = Holds(link)
    server = build_server(config, link, lambda _: holds)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holds.keep)
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            await server.run_stdio_async()
            nursery.cancel_scope.cancel()
    finally:
        await holds.release_all()


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for _ in signals:
            scope.cancel()
            return


def run_stdio(config: McpConfig, link: DaemonLink) -> None:
    """`supervisor mcp`: serve over stdio on trio."""
    anyio.run(serve_stdio, config, link, backend="trio")
