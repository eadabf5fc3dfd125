"""MCP resources: what an agent may want in its context without spending a tool call.

An MCP client can attach these to a conversation or show them to its user: the sandbox
environments with their free capacity, the managed resources, one resource's status.
They are the same answers as the tools `sandbox_environments`, `resources_list` and
`resource_status`, as JSON, read from the daemon at each read (never cached: a stale
capacity figure would mislead the agent). Each belongs to its tool group and is absent
when the group is off. An unknown name is MCP's resource-not-found error; any other
refusal a resource error with the daemon's message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from supervisor.errors import DaemonUnavailableError, RequestError
from supervisor.mcp.link import DaemonLink
from supervisor.mcp.sandbox_tools import environment_view

JSON = "application/json"
ENVIRONMENTS = "supervisor://environments"
RESOURCES = "supervisor://resources"


@contextmanager
def read_refusals() -> Iterator[None]:
    """Daemon refusals as resource errors (404: not found), with the daemon's message."""
    try:
        yield
    except RequestError as exc:
        kind = ResourceNotFoundError if exc.status == 404 else ResourceError
        raise kind(f"{exc.message} ({exc.code})") from None
    except DaemonUnavailableError as exc:
        raise ResourceError(str(exc)) from None


def _json(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)


def add_environment_documents(server: MCPServer, link: DaemonLink) -> None:
    """The environment list (sandboxes group)."""

    @server.resource(ENVIRONMENTS, name="environments", mime_type=JSON)
    async def environments() -> str:
        """Sandbox environments: status, ready sandboxes and free capacity."""
        with read_refusals():
            envs = await link.call(lambda c: c.environments())
        return _json({"environments": [environment_view(e) for e in envs]})


def add_resource_documents(server: MCPServer, link: DaemonLink) -> None:
    """The resource list and each resource's status (resources_read group)."""

    @server.resource(RESOURCES, name="resources", mime_type=JSON)
    async def resources() -> str:
        """Managed resources: name, kind, state, liveness, restarts, detail."""
        with read_refusals():
            return _json({"resources": await link.call(lambda c: c.resources())})

    @server.resource(RESOURCES + "/{name}", name="resource", mime_type=JSON)
    async def resource(name: str) -> str:
        """One resource's state, liveness, pid or container, endpoint and detail."""
        with read_refusals():
            return _json(await link.call(lambda c: c.resource(name)))
