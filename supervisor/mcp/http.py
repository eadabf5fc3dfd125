"""MCP over streamable HTTP at `/mcp`, inside the daemon.

The SDK's session manager speaks the protocol; around it we add what the daemon owes its
TCP listener. The bearer token is checked by the API's guard before a request gets here.
A browser page must not drive the daemon from another origin (DNS rebinding, a malicious
tab): a request with an `Origin` header is refused unless the origin is the daemon's own
or listed in `[mcp] allowed_origins`. The SDK's own Host check is off: it would pin the
daemon to loopback names, and the token already decides who may call.

Sandbox sessions are held per MCP session (its `Mcp-Session-Id`): heartbeated while the
MCP session is active, released when the client DELETEs it or when it is idle (no request
in flight, no open stream) for `http_idle_timeout`. The SDK ends an idle MCP session at
the same moment, so a vanished agent leaves neither behind. Clients of protocol
2026-07-28 have no MCP session: what they acquire lives by its lease alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
import trio
from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor.api.edge import StreamSlots
from supervisor.config.mcp import McpConfig
from supervisor.mcp.holds import Holds
from supervisor.mcp.link import DaemonLink
from supervisor.mcp.server import build_server

log = structlog.get_logger("supervisor.mcp")

SESSION_HEADER = b"mcp-session-id"


@dataclass
class HttpSessions:
    """The `Holds` of each MCP session, each alive until DELETE or idle."""

    link: DaemonLink
    idle: float
    nursery: trio.Nursery
    _holds: dict[str, Holds] = field(default_factory=dict)
    _idle: dict[str, trio.CancelScope] = field(default_factory=dict)

    def holds_for(self, ctx: Context) -> Holds | None:
        """The holds of the MCP session that `ctx`'s request belongs to; None for a request
        outside any (protocol 2026-07-28 is sessionless: its sandbox sessions live by
        their lease, which the agent renews with sandbox_heartbeat or by using them)."""
        # The SDK routed this request to its session by this very header, so it names
        # the session (a request with an unknown id never reaches a tool).
        sid = (ctx.headers or {}).get("mcp-session-id")
        if not sid:
            return None
        holds = self._holds.get(sid)
        if holds is None:
            holds = self._holds[sid] = Holds(self.link)
            # Its idle deadline, pushed back by every request of the session (`seen`).
            self._idle[sid] = trio.CancelScope(deadline=trio.current_time() + self.idle)
            self.nursery.start_soon(self._keep, sid, holds)
        return holds

    def seen(self, sid: str) -> None:
        """A request of MCP session `sid` came or ended: it is not idle."""
        if (scope := self._idle.get(sid)) is not None:
            scope.deadline = trio.current_time() + self.idle

    def end(self, sid: str) -> None:
        """The client ended MCP session `sid`: release what it held now."""
        if (scope := self._idle.get(sid)) is not None:
            scope.cancel()

    async def _keep(self, sid: str, holds: Holds) -> None:
        try:
            with self._idle[sid]:
                await holds.keep()  # heartbeats until the session ends or idles out
        finally:
            self._holds.pop(sid, None)
            self._idle.pop(sid, None)
            log.info("mcp_session_ended", session=sid[:12], held=len(holds.held))
            await holds.release_all()


class McpEndpoint:
    """The ASGI app at `/mcp`: the Origin check, session bookkeeping, then the SDK.

    A GET is the stream a client keeps open for the server's own messages, as long as its
    MCP session lasts: it takes a slot of the listener's `StreamSlots`, as /v1/events
    does (past the cap, 503 `too_many_streams`), so MCP clients can never hold every
    connection. A POST is one request (its answer may stream progress, but ends with its
    call), like a JSON exec on /v1: it takes none.
    """

    def __init__(
        self,
        handle: ASGIApp,
        sessions: HttpSessions,
        origins: list[str],
        streams: StreamSlots | None = None,
    ) -> None:
        self.handle = handle
        self.sessions = sessions
        self.origins = set(origins)
        self.streams = StreamSlots(128) if streams is None else streams

    def on(self, streams: StreamSlots) -> McpEndpoint:
        """This endpoint, its GET streams counted in `streams` (a listener's)."""
        return McpEndpoint(self.handle, self.sessions, list(self.origins), streams)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is not None and not self._allowed(origin.decode("latin-1"), headers):
            await _forbidden(send, "Origin not allowed: add it to [mcp] allowed_origins")
            return
        release = self.streams.take() if scope["method"] == "GET" else None
        sid = headers.get(SESSION_HEADER, b"").decode("latin-1")
        self.sessions.seen(sid)
        try:
            await self.handle(scope, receive, send)
        finally:
            if release is not None:
                release()
            self.sessions.seen(sid)  # a long stream ended: idle counts from now
            if scope["method"] == "DELETE" and sid:
                self.sessions.end(sid)

    def _allowed(self, origin: str, headers: dict[bytes, bytes]) -> bool:
        host = headers.get(b"host", b"").decode("latin-1")
        return origin in self.origins or origin in (f"http://{host}", f"https://{host}")


async def _forbidden(send: Send, message: str) -> None:
    body = (
        b'{"error": {"code": "forbidden", "message": "' + message.encode() + b'", '
        b'"retryable": false}}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def open_mcp_endpoint(config: McpConfig, link: DaemonLink) -> AsyncIterator[McpEndpoint]:
    """The `/mcp` app, with its session manager running until the block ends."""
    async with trio.open_nursery() as nursery:
        sessions = HttpSessions(link, config.http_idle_timeout, nursery)
        server = build_server(config, link, sessions.holds_for)
        server.streamable_http_app(
            streamable_http_path="/mcp",
            session_idle_timeout=config.http_idle_timeout,
            max_sessions=config.http_sessions,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        manager = server.session_manager
        async with manager.run():
            yield McpEndpoint(manager.handle_request, sessions, config.allowed_origins)
        nursery.cancel_scope.cancel()
