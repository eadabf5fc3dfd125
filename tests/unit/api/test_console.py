"""The web console's sign-in, session cookie and CSRF rules (in-process ASGI; no socket)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from supervisor.api.access import Tokens
from supervisor.api.app import build_app
from supervisor.api.console import static_files
from supervisor.api.cookies import COOKIE, ConsoleSessions
from supervisor.api.openapi import openapi_document
from supervisor.errors import EnvironmentNotFoundError
from tests.unit.api.test_openapi import StubControl

FULL, READ = "full-token", "read-token"
ORIGIN = "http://d"


class Sandboxes:
    """A restart that reaches the service says 404: the request got past the guard."""

    def commands(self, session_id: str) -> Any:
        raise AssertionError("not called")

    def restart(self, name: str) -> dict[str, Any]:
        raise EnvironmentNotFoundError(f"no environment named {name!r}")


class Control(StubControl):
    sandboxes = Sandboxes()  # type: ignore[assignment]


def console(tokens: Tokens | None = None, *, secure: bool = False) -> httpx.AsyncClient:
    tokens = Tokens(full=FULL.encode(), read=READ.encode()) if tokens is None else tokens
    app = build_app(Control(), tokens=tokens, tcp=True, secure=secure)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN)


async def sign_in(api: httpx.AsyncClient, token: str = FULL) -> str:
    """Sign in; the CSRF token."""
    answer = await api.post("/console/session", json={"token": token})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["csrf"])


async def test_signing_in_sets_an_httponly_samesite_strict_cookie_not_the_token() -> None:
    """The token buys an opaque HttpOnly, SameSite=Strict cookie; the token is not in it."""
    async with console() as api:
        answer = await api.post("/console/session", json={"token": FULL})
    assert answer.status_code == 200
    assert answer.json()["access"] == "full"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie
    assert FULL not in cookie


async def test_the_cookie_is_secure_on_a_tls_listener() -> None:
    """On TLS the cookie is marked Secure, so no browser sends it over plain HTTP."""
    async with console(secure=True) as api:
        answer = await api.post("/console/session", json={"token": FULL})
    assert "; Secure" in answer.headers["set-cookie"]


async def test_a_bad_token_is_refused_401_and_sets_no_cookie() -> None:
    """A token that is not ours: 401 and no cookie."""
    async with console() as api:
        answer = await api.post("/console/session", json={"token": "full-toke"})
    assert answer.status_code == 401
    assert "set-cookie" not in answer.headers


async def test_without_signing_in_only_the_page_and_health_are_visible() -> None:
    """Before sign-in: the page, its files and health answer; /v1 and the session do not."""
    async with console() as api:
        assert (await api.get("/")).status_code == 200
        assert (await api.get("/console/app.js")).status_code == 200
        assert (await api.get("/healthz")).status_code == 200
        assert (await api.get("/console/session")).status_code == 401
        assert (await api.get("/v1/resources")).status_code == 401
        assert (await api.get("/v1/events")).status_code == 401


async def test_the_page_forbids_inline_scripts_and_other_origins() -> None:
    """The page's CSP allows this origin only, with no inline script or frame embedding."""
    async with console() as api:
        page = await api.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", ["../console.py", "..%2Fconsole.py", "nope.js", "%00", "static"])
async def test_only_the_console_files_are_served(name: str) -> None:
    """A name that is not one of the static files is 404, whatever it tries."""
    async with console() as api:
        answer = await api.get(f"/console/{name}")
    assert answer.status_code == 404


def test_the_static_files_are_package_data() -> None:
    """The page and its modules ship inside the package, with their media types."""
    files = static_files()
    assert files["index.html"][1].startswith("text/html")
    assert files["app.js"][1].startswith("text/javascript")
    assert files["console.css"][1].startswith("text/css")


async def test_the_cookie_reads_v1_like_its_token() -> None:
    """A signed-in browser reads /v1 with its cookie alone."""
    async with console() as api:
        await sign_in(api)
        answer = await api.get("/v1/openapi.json")
    assert answer.status_code == 200


async def test_a_write_with_the_cookie_needs_the_csrf_header() -> None:
    """POST with the cookie but without X-CSRF-Token (or a wrong one): 403 `csrf`."""
    async with console() as api:
        await sign_in(api)
        missing = await api.post("/v1/environments/nope/restart", headers={"origin": ORIGIN})
        wrong = await api.post("/v1/environments/nope/restart", headers={"x-csrf-token": "x"})
    assert missing.status_code == 403
    assert missing.json()["error"]["code"] == "csrf"
    assert wrong.status_code == 403


async def test_a_write_with_the_cookie_and_the_csrf_header_runs() -> None:
    """With the session's CSRF token and its own origin, the request reaches the route."""
    async with console() as api:
        csrf = await sign_in(api)
        answer = await api.post(
            "/v1/environments/nope/restart", headers={"x-csrf-token": csrf, "origin": ORIGIN}
        )
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


async def test_a_write_from_another_origin_is_refused_even_with_the_csrf_token() -> None:
    """An Origin other than the listener's: 403, the header notwithstanding."""
    async with console() as api:
        csrf = await sign_in(api)
        answer = await api.post(
            "/v1/environments/nope/restart",
            headers={"x-csrf-token": csrf, "origin": "http://evil.example"},
        )
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "csrf"


async def test_signing_in_from_another_origin_is_refused() -> None:
    """Login CSRF: a sign-in posted from another origin sets no cookie."""
    async with console() as api:
        answer = await api.post(
            "/console/session", json={"token": FULL}, headers={"origin": "http://evil.example"}
        )
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers


async def test_a_read_only_session_cannot_write() -> None:
    """Signed in with the read-only token: writes are 403 `forbidden`, as with the token."""
    async with console() as api:
        csrf = await sign_in(api, READ)
        answer = await api.post("/v1/environments/nope/restart", headers={"x-csrf-token": csrf})
        who = await api.get("/console/session")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"
    assert who.json()["access"] == "read"


async def test_signing_out_ends_the_session() -> None:
    """After sign-out the old cookie value opens nothing, even if a browser kept it."""
    async with console() as api:
        csrf = await sign_in(api)
        kept = api.cookies[COOKIE]
        out = await api.delete("/console/session", headers={"x-csrf-token": csrf})
        api.cookies.set(COOKIE, kept)
        after = await api.get("/v1/openapi.json")
    assert out.status_code == 204
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert after.status_code == 401
    assert "sign in again" in after.json()["error"]["message"]


async def test_a_bearer_token_wins_over_the_cookie() -> None:
    """A request with both is judged by its token (a bad token is 401, cookie or not)."""
    async with console() as api:
        await sign_in(api)
        answer = await api.get("/v1/openapi.json", headers={"authorization": "Bearer nope"})
    assert answer.status_code == 401


def test_sessions_are_bounded_in_number_and_time() -> None:
    """Past the limit the oldest session is dropped; past its TTL a session is gone."""
    now = [0.0]
    sessions = ConsoleSessions(ttl=10.0, limit=2, clock=lambda: now[0])
    first, _ = sessions.open("full")
    second, _ = sessions.open("read")
    third, _ = sessions.open("full")
    assert len(sessions) == 2
    assert sessions.find(first) is None
    assert sessions.find(second) is not None
    now[0] = 10.0
    assert sessions.find(third) is None


def test_the_document_describes_the_console_routes() -> None:
    """The TCP listener's console routes are ApiRoutes, so the OpenAPI document has them."""
    app = build_app(Control(), tokens=Tokens(full=b"x"), tcp=True)  # type: ignore[arg-type]
    routes = app.app.app.routes  # type: ignore[attr-defined]
    paths = openapi_document(routes)["paths"]
    assert set(paths["/console/session"]) == {"get", "post", "delete"}
    assert "/" in paths
    assert "/console/{asset}" in paths
