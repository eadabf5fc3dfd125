"""The web console on the TCP listener: its static files, sign-in and sign-out.

The console is plain ES modules, CSS and one HTML page, shipped in the wheel as package
data (`supervisor/api/static/`) and served as they are: no build step, nothing fetched
from elsewhere (the Content-Security-Policy allows this origin only). The files hold no
data: everything the console shows comes from /v1, behind the token or the session
cookie (`api.cookies`), so without signing in a browser sees the sign-in form and
nothing else. Only names that exist in the static directory are served (looked up in a
table built once, never joined to a path), so no request can reach another file.

The routes are `ApiRoute`s like every other, so the OpenAPI document describes them and
a new one cannot be forgotten; they are outside /v1, so the bearer guard does not run
on them, and sign-in does its own checks.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from supervisor.api import models
from supervisor.api.access import Tokens
from supervisor.api.cookies import ConsoleSessions, cookie_value, csrf_problem, foreign_origin
from supervisor.api.errors import ApiError
from supervisor.api.models import reply
from supervisor.api.requests import SignInRequest, parse_body
from supervisor.api.spec import ApiRoute, Media, Operation, Param

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything from this origin, nothing inline, no frames: an injected string stays text.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}

INDEX = Operation(
    "The web console's page (the sign-in form until signed in)",
    {200: Media(("text/html",), "the console's HTML page")},
    access="read",
)
ASSET = Operation(
    "One of the console's static files (ES modules, CSS)",
    {200: Media(("text/javascript", "text/css", "image/svg+xml"), "the file")},
    errors=(404,),
    params=(Param("asset", "path", "the file's name"),),
    access="read",
)
WHO = Operation(
    "The signed-in browser's access and CSRF token (401: not signed in)",
    {200: models.ConsoleSignIn},
    errors=(401,),
    access="read",
)
SIGN_IN = Operation(
    "Sign a browser in with an API token: a session cookie (HttpOnly, SameSite=Strict)",
    {200: models.ConsoleSignIn},
    errors=(401, 403),
    body=SignInRequest,
    access="read",
    description="401 for a token that is not one of ours; 403 for a request from another "
    "origin or a listener with no token configured.",
)
SIGN_OUT = Operation(
    "Sign the browser out: its session ends and its cookie is cleared",
    {204: None},
    errors=(403,),
    access="read",
)


def static_files() -> dict[str, tuple[bytes, str]]:
    """The console's files by name, with their media type, read once."""
    found: dict[str, tuple[bytes, str]] = {}
    for entry in (resources.files("supervisor.api") / "static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in TYPES:
            found[entry.name] = (entry.read_bytes(), TYPES[suffix])
    return found


def console_routes(tokens: Tokens, sessions: ConsoleSessions) -> list[ApiRoute]:
    """`/` and `/console/...`: the page, its files, sign-in and sign-out."""
    files = static_files()

    async def index(request: Request) -> Response:
        body, media = files["index.html"]
        return Response(body, media_type=media, headers=SECURITY_HEADERS)

    async def asset(request: Request) -> Response:
        found = files.get(request.path_params["asset"])
        if found is None:
            raise ApiError(404, "not_found", "no such file in the console")
        return Response(found[0], media_type=found[1], headers=SECURITY_HEADERS)

    async def who(request: Request) -> Response:
        key = cookie_value(request.scope)
        session = sessions.find(key) if key else None
        if session is None:
            raise ApiError(401, "unauthorized", "not signed in")
        answer = models.ConsoleSignIn(access=session.access, csrf=session.csrf)
        return reply(answer, headers={"cache-control": "no-store"})

    async def sign_in(request: Request) -> Response:
        if foreign_origin(request.scope):
            raise ApiError(403, "csrf", "the request comes from another origin")
        body = await parse_body(request, SignInRequest)
        if tokens.full is None and tokens.read is None:
            raise ApiError(
                403, "forbidden", "no API token is configured: set daemon.api_token_file"
            )
        granted = tokens.access(body.token.strip().encode())
        if granted is None:
            raise ApiError(401, "unauthorized", "that is not an API token of this daemon")
        key, session = sessions.open(granted)
        answer = models.ConsoleSignIn(access=granted, csrf=session.csrf)
        headers = {"cache-control": "no-store", "set-cookie": sessions.set_cookie(key)}
        return reply(answer, headers=headers)

    async def sign_out(request: Request) -> Response:
        key = cookie_value(request.scope)
        session = sessions.find(key) if key else None
        if key and session is not None:
            if problem := csrf_problem(request.scope, session):
                raise ApiError(403, "csrf", problem)
            sessions.close(key)
        return Response(status_code=204, headers={"set-cookie": sessions.clear_cookie()})

    return [
        ApiRoute("/", index, "GET", INDEX),
        ApiRoute("/console/session", who, "GET", WHO),
        ApiRoute("/console/session", sign_in, "POST", SIGN_IN),
        ApiRoute("/console/session", sign_out, "DELETE", SIGN_OUT),
        ApiRoute("/console/{asset}", asset, "GET", ASSET),
    ]
