"""Deephaven tools, named as deephaven-mcp 1.1.4's Community and Enterprise session tools.

A "session" here is a session of a `backend = "deephaven"` environment (Community) or of a
`backend = "deephaven-enterprise"` one (a Core+ worker): creating one is an acquire (capped
by the environment's `max_size`, leased, held by this MCP session), deleting one is a
release. Everything else is a Python script run in the session's
server through the daemon's exec, so the MCP process needs no Deephaven client. The
helper scripts run inside a function that deletes itself, leaving the session's scope as
the agent left it, and print one JSON line that the tool parses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from supervisor.mcp.holds import Holds
from supervisor.mcp.link import DaemonLink
from supervisor.mcp.sandbox_tools import MAX_OUTPUT, Script, clip, environment_view
from supervisor.mcp.tools import ADD, CHANGE, READ, Name, SessionId, Timeout, refusals, release

COMMUNITY, ENTERPRISE = "deephaven", "deephaven-enterprise"  # the environments' backends
KIND_OF = {COMMUNITY: "community", ENTERPRISE: "enterprise"}
TableName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")]
MAX_ROWS = 1000

_WRAP = """
def _supervisor_mcp_tool():
    import json
    from deephaven.table import Table
    scope = globals()
{body}
try:
    _supervisor_mcp_tool()
finally:
    del _supervisor_mcp_tool
"""

TABLES = """
    names = sorted(k for k, v in scope.items() if isinstance(v, Table))
    print(json.dumps(names))
"""

SCHEMA = """
    found = []
    for name in {names!r}:
        table = scope.get(name)
        if not isinstance(table, Table):
            found.append({{"table": name, "error": "no table of that name"}})
            continue
        columns = [{{"name": c.name, "type": str(c.data_type)}} for c in table.columns]
        found.append({{"table": name, "columns": columns, "size": table.size}})
    print(json.dumps(found))
"""

DATA = """
    table = scope.get({name!r})
    if not isinstance(table, Table):
        raise NameError("no table named {name}")
    rows = list(table.head({rows}).iter_dict())
    print(json.dumps({{"rows": rows, "size": table.size, "is_refreshing": table.is_refreshing}}, default=str))
"""

# Used as it is (not formatted), so its braces are single.
PIP = """
    import importlib.metadata as metadata
    found = sorted({(d.metadata["Name"], d.version) for d in metadata.distributions()})
    print(json.dumps([{"package": n, "version": v} for n, v in found]))
"""


def helper(body: str) -> str:
    """A helper script: `body` runs inside a function that leaves no name behind."""
    return _WRAP.format(body=body.rstrip("\n"))


class Scripts:
    """Runs scripts in a session's server through the daemon's exec."""

    def __init__(self, link: DaemonLink) -> None:
        self.link = link

    async def run(
        self, session_id: str, script: str, timeout: float | None = None
    ) -> dict[str, Any]:
        with refusals():
            return await self.link.call(
                lambda c: c.exec(session_id, script=script, timeout=timeout)
            )

    async def answer(self, session_id: str, body: str) -> Any:
        """The JSON a helper script printed last; its error as a tool error."""
        result = await self.run(session_id, helper(body))
        if result["exit_code"] != 0:
            raise ToolError((result["stderr"] or result["stdout"]).strip()[-4000:])
        lines = result["stdout"].strip().splitlines()
        return json.loads(lines[-1])


def add_deephaven_tools(
    server: MCPServer, link: DaemonLink, holds_for: Callable[[Context], Holds | None]
) -> None:
    """Register the deephaven-mcp Community and Enterprise session tools on `server`."""
    add_session_tools(server, link, holds_for)
    add_script_tools(server, Scripts(link))


def add_script_tools(server: MCPServer, scripts: Scripts) -> None:
    """Scripts, tables, schemas, rows and packages of a session."""

    @server.tool(annotations=CHANGE)
    async def session_script_run(
        session_id: SessionId, script: Script, timeout_seconds: Timeout | None = None
    ) -> dict[str, Any]:
        """Run a Python script in the session's server; returns what it printed, or its error."""
        result = await scripts.run(session_id, script, timeout_seconds)
        stdout, cut_out = clip(result["stdout"], MAX_OUTPUT)
        stderr, cut_err = clip(result["stderr"], MAX_OUTPUT)
        return {
            "success": result["exit_code"] == 0 and not result["timed_out"],
            "stdout": stdout,
            "stderr": stderr,
            "timed_out": result["timed_out"],
            "truncated": result["truncated"] or cut_out or cut_err,
        }

    @server.tool(annotations=READ)
    async def session_tables_list(session_id: SessionId) -> dict[str, Any]:
        """Names of the tables in the session's scope."""
        return {"tables": await scripts.answer(session_id, TABLES)}

    @server.tool(annotations=READ)
    async def session_tables_schema(
        session_id: SessionId,
        table_names: Annotated[list[TableName], Field(max_length=100)] | None = None,
    ) -> dict[str, Any]:
        """Columns (name, type) and size of the named tables, or of every table."""
        names = table_names
        if names is None:
            names = await scripts.answer(session_id, TABLES)
        return {"schemas": await scripts.answer(session_id, SCHEMA.format(names=list(names)))}

    @server.tool(annotations=READ)
    async def session_table_data(
        session_id: SessionId,
        table_name: TableName,
        max_rows: Annotated[int, Field(ge=1, le=MAX_ROWS)] = 100,
    ) -> dict[str, Any]:
        """The first max_rows rows of a table as JSON objects, with its size."""
        data: dict[str, Any] = await scripts.answer(
            session_id, DATA.format(name=table_name, rows=max_rows)
        )
        return {"table": table_name, **data}

    @server.tool(annotations=READ)
    async def session_pip_list(session_id: SessionId) -> dict[str, Any]:
        """Python packages installed in the session's server."""
        return {"packages": await scripts.answer(session_id, PIP)}


def add_session_tools(
    server: MCPServer, link: DaemonLink, holds_for: Callable[[Context], Holds | None]
) -> None:
    """List, describe, create and delete Community and Enterprise sessions; Community credentials."""

    async def deephaven_environments(*backends: str) -> list[dict[str, Any]]:
        wanted = backends or (COMMUNITY, ENTERPRISE)
        with refusals():
            envs = await link.call(lambda c: c.environments())
        return [
            {**environment_view(e), "type": KIND_OF[e["backend"]]}
            for e in envs
            if e["backend"] in wanted
        ]

    async def create(
        backend: str, environment: str, ctx: Context, ttl_seconds: float | None
    ) -> dict[str, Any]:
        if environment not in {e["name"] for e in await deephaven_environments(backend)}:
            raise ToolError(f"no {backend} environment named {environment!r}")
        holds = holds_for(ctx)
        with refusals():
            session = await link.call(
                lambda c: c.acquire(environment, ttl=ttl_seconds), undo=release
            )
        if holds is not None:
            holds.hold(session)
        return {
            "session_id": session["session_id"],
            "environment": environment,
            "expires_at": session["expires_at"],
            "lease_expires_at": session.get("lease_expires_at"),
            "kept_alive": holds is not None,
        }

    async def delete(session_id: str, ctx: Context) -> dict[str, Any]:
        with refusals():
            await link.call(lambda c: c.release(session_id))
        if (holds := holds_for(ctx)) is not None:
            holds.drop(session_id)
        return {"deleted": True, "session_id": session_id}

    def held(ctx: Context) -> dict[str, dict[str, Any]]:
        holds = holds_for(ctx)
        return {} if holds is None else holds.acquired

    @server.tool(annotations=READ)
    async def sessions_list(ctx: Context) -> dict[str, Any]:
        """List the Community and Enterprise sessions created here, and the environments
        that can create more (with free capacity)."""
        environments = await deephaven_environments()
        types = {e["name"]: e["type"] for e in environments}
        sessions = [
            {"session_id": sid, "type": types[s["environment"]], "source": s["environment"]}
            for sid, s in held(ctx).items()
            if s["environment"] in types
        ]
        return {"sessions": sessions, "environments": environments}

    @server.tool(annotations=READ)
    async def session_details(session_id: SessionId) -> dict[str, Any]:
        """A session's environment, state, lease and expiry."""
        with refusals():
            return await link.call(lambda c: c.session(session_id))

    @server.tool(annotations=ADD)
    async def session_community_create(
        environment: Name, ctx: Context, ttl_seconds: Timeout | None = None
    ) -> dict[str, Any]:
        """Create a Community session: a server from a deephaven environment's pool."""
        return await create(COMMUNITY, environment, ctx, ttl_seconds)

    @server.tool(annotations=CHANGE)
    async def session_community_delete(session_id: SessionId, ctx: Context) -> dict[str, Any]:
        """Delete a Community session: its server's scope is wiped and returned to the pool."""
        return await delete(session_id, ctx)

    @server.tool(annotations=ADD)
    async def session_enterprise_create(
        environment: Name, ctx: Context, ttl_seconds: Timeout | None = None
    ) -> dict[str, Any]:
        """Create an Enterprise session: a new Core+ worker from a deephaven-enterprise
        environment (its factory, heap and cap are the environment's)."""
        return await create(ENTERPRISE, environment, ctx, ttl_seconds)

    @server.tool(annotations=CHANGE)
    async def session_enterprise_delete(session_id: SessionId, ctx: Context) -> dict[str, Any]:
        """Delete an Enterprise session: its worker is deleted."""
        return await delete(session_id, ctx)

    @server.tool(annotations=READ)
    async def session_community_credentials(session_id: SessionId, ctx: Context) -> dict[str, Any]:
        """How to connect to a Community session created here (host, port, auth, key)."""
        session = held(ctx).get(session_id)
        if session is None:
            raise ToolError("only for a session created by this MCP session")
        connection: dict[str, Any] = session.get("connection") or {}
        return connection
