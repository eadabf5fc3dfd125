"""`[mcp]`: which MCP tool groups agents get, and how `/mcp` over HTTP is guarded.

Pure: imports nothing from the package but `config.types`. Each group is a switch: an
agent never sees the tools of a group that is off (they are not registered, not merely
refused). Control of resources is off by default: an agent that can stop the database
is a decision an operator makes, not a default.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from supervisor.config.types import DAY, Between, Model, Seconds

Origin = Annotated[
    str, StringConstraints(pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+$", max_length=255)
]


class McpConfig(Model):
    """`[mcp]`: tool groups for `supervisor mcp` and the daemon's `/mcp`."""

    sandboxes: bool = True  # environments, sessions, exec, files, background commands
    resources_read: bool = True  # resource list/status and recent events
    resources_control: bool = False  # start, stop, restart
    deephaven: bool = True  # Deephaven session tools (when the daemon has any)
    http: bool = False  # serve streamable HTTP at /mcp on the TCP listener (token required)
    allowed_origins: list[Origin] = []  # Origin headers accepted at /mcp besides its own
    # An HTTP MCP session with no request in flight and no open stream this long is ended,
    # and the sandbox sessions it held are released.
    http_idle_timeout: Annotated[float, Seconds(1, DAY)] = 60.0
    http_sessions: Annotated[int, Between(1, 10_000)] = 64  # MCP sessions open at once
