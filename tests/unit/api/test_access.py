"""Bearer tokens and their scopes on the TCP listener (in-process ASGI; no socket)."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from supervisor.api.access import Tokens, route_access
from supervisor.api.app import build_app
from supervisor.api.spec import ApiRoute, Operation
from tests.unit.api.test_openapi import StubControl, every_route

FULL, READ = b"full-token", b"read-token"


def test_each_token_grants_its_own_access() -> None:
    """The full token grants full, the read token read, anything else nothing."""
    tokens = Tokens(full=FULL, read=READ)
    assert tokens.access(FULL) == "full"
    assert tokens.access(READ) == "read"
    assert tokens.access(b"read-toke") is None
    assert tokens.access(b"") is None
    assert Tokens(full=FULL).access(READ) is None


@pytest.mark.parametrize(
    ("method", "path", "access"),
    [
        ("GET", "/v1/resources", "read"),
        ("GET", "/v1/resources/web", "read"),
        ("GET", "/v1/events", "read"),
        ("GET", "/v1/openapi.json", "read"),
        ("GET", "/v1/environments/agents", "read"),
        ("GET", "/v1/resources/web/credentials", "full"),
        ("POST", "/v1/resources/web/stop", "full"),
        ("POST", "/v1/reload", "full"),
        ("GET", "/v1/sessions/abc", "full"),
        ("POST", "/v1/environments/agents/sessions", "full"),
        ("GET", "/v1/nowhere", None),
        ("DELETE", "/v1/resources", None),
    ],
)
def test_routes_declare_their_access(method: str, path: str, access: str | None) -> None:
    """Status, events and the description are read; secrets and every verb are full."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    assert route_access(every_route(), scope) == access


def test_a_route_without_an_operation_needs_the_full_token() -> None:
    """A plain Starlette route is closed to the read-only token (deny by default)."""

    async def handler(request: Request) -> Response:
        return Response()

    routes: list[BaseRoute] = [Route("/v1/plain", handler)]
    scope = {"type": "http", "method": "GET", "path": "/v1/plain", "root_path": ""}
    assert route_access(routes, scope) == "full"
    op = Operation("x", {204: None}, access="read")
    described: list[BaseRoute] = [ApiRoute("/v1/plain", handler, "GET", op)]
    assert route_access(described, scope) == "read"


def client(tokens: Tokens) -> httpx.AsyncClient:
    app = build_app(StubControl(), tokens=tokens, tcp=True)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://d")


async def test_the_read_token_is_refused_a_write_with_403_forbidden() -> None:
    """POST with the read token: 403 `forbidden`, saying which token can."""
    async with client(Tokens(full=FULL, read=READ)) as api:
        answer = await api.post(
            "/v1/resources/web/stop", headers={"authorization": "Bearer read-token"}
        )
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert error["code"] == "forbidden"
    assert "read-only token" in error["message"]
    assert "api_token_file" in error["message"]


async def test_a_read_only_listener_still_asks_for_a_token() -> None:
    """With only a read token configured, no token is 401, and the read token reads."""
    async with client(Tokens(read=READ)) as api:
        missing = await api.get("/v1/openapi.json")
        read = await api.get("/v1/openapi.json", headers={"authorization": "Bearer read-token"})
    assert missing.status_code == 401
    assert read.status_code == 200
