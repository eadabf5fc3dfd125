"""Who may call what over TCP: the full token, the read-only token, or nobody.

`/v1` over TCP needs `Authorization: Bearer <token>`; `/metrics`, `/healthz` and
`/readyz` stay open so Prometheus and load balancers need no secret (the unix socket is
trusted by its file permissions and has no guard). The full token (`api_token_file`)
may call every route; the read-only token (`api_read_token_file`) only the routes whose
`Operation.access` is "read" (`api.spec`): a route with no declared access is "full",
and so is the daemon's `/mcp` (its tools act on sandboxes).
Credentials are "full": they are secrets, and a token handed out for dashboards must
not lead to one. Tokens are compared in constant time, each one every time, so the
answer's timing does not say which one came close.

A browser signed in to the console (`api.cookies`) presents its session cookie instead
of a token: it grants what the token it signed in with granted, and a request that
changes anything must also pass the CSRF check. A bearer token, when sent, wins; `/mcp`
takes tokens only (an agent is no browser).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor.api.cookies import ConsoleSessions, cookie_value, csrf_problem
from supervisor.api.errors import error_response
from supervisor.api.spec import Access, ApiRoute


@dataclass(frozen=True, slots=True)
class Tokens:
    """The TCP listener's bearer tokens: `full` may do anything, `read` only read."""

    full: bytes | None = None
    read: bytes | None = None

    def access(self, presented: bytes) -> Access | None:
        """What `presented` grants, or None if it is no token of ours."""
        full = self.full is not None and hmac.compare_digest(presented, self.full)
        read = self.read is not None and hmac.compare_digest(presented, self.read)
        if full:
            return "full"
        return "read" if read else None


def route_access(routes: Sequence[BaseRoute], scope: Scope) -> Access | None:
    """The access the route that will handle `scope` needs (None: no route will run)."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route.operation.access if isinstance(route, ApiRoute) else "full"
    return None  # a 404 or 405: no handler runs


class AccessGuard:
    """ASGI middleware for the TCP listener: bearer tokens and their scopes on /v1."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        tokens: Tokens,
        sessions: ConsoleSessions | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.tokens = tokens
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (
            scope["path"].startswith("/v1") or scope["path"] == "/mcp"
        ):
            await self.app(scope, receive, send)
            return
        if self.tokens.full is None and self.tokens.read is None:
            response = error_response(
                403,
                "forbidden",
                "the /v1 API is not available over TCP: set daemon.api_token_file, or use "
                "the unix socket",
            )
            await response(scope, receive, send)
            return
        granted = self._granted(scope)
        if not isinstance(granted, str):
            await granted(scope, receive, send)
            return
        if granted == "read" and route_access(self.routes, scope) == "full":
            path = scope["path"][:200]
            response = error_response(
                403,
                "forbidden",
                f"the read-only token cannot call {scope['method']} {path}: it reads status, "
                "events and the API description; use the full token (api_token_file)",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _granted(self, scope: Scope) -> Access | Response:
        """What the request's token (or console session) grants, or the refusal."""
        header = dict(scope["headers"]).get(b"authorization", b"")
        console = self.sessions is not None and scope["path"] != "/mcp"  # /mcp: tokens only
        if not header and console and (key := cookie_value(scope)):
            assert self.sessions is not None
            session = self.sessions.find(key)
            if session is None:
                return _unauthorized("the console session has ended: sign in again")
            if problem := csrf_problem(scope, session):
                return error_response(403, "csrf", problem)
            return session.access
        scheme, _, presented = header.partition(b" ")
        granted = self.tokens.access(presented.strip()) if scheme.lower() == b"bearer" else None
        if granted is None:
            return _unauthorized("missing bearer token" if not header else "invalid bearer token")
        return granted


def _unauthorized(message: str) -> Response:
    return error_response(401, "unauthorized", message, headers={"www-authenticate": "Bearer"})
