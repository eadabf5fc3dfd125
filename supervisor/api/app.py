"""The HTTP/JSON API as an ASGI app (Starlette), over a small `Control` protocol.

The app knows nothing of supervisors or launchers: the daemon implements `Control`. One
app is built per listener: the unix socket (trusted by file permissions) and TCP (where
`/v1` needs the bearer token; `/metrics`, `/healthz` and `/readyz` stay open so
Prometheus and load balancers need no secret). Every error has one shape:
`{"error": {"code", "message", "retryable"}}`.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor.api.responses import ApiError, error_response, read_json
from supervisor.api.sandboxes import Sandboxes, sandbox_routes
from supervisor.errors import ConfigError
from supervisor.supervision.settings import Snapshot
from supervisor.supervision.states import Transition

HEARTBEAT = 15.0
ACTIONS = ("start", "stop", "restart")


class EventSource(Protocol):
    @property
    def last_seq(self) -> int: ...
    def replay(self, since: int) -> tuple[list[Transition], bool]: ...
    def subscribe(self, buffer: int = ...) -> Any: ...


class Control(Protocol):
    """What the API needs from the daemon."""

    @property
    def is_ready(self) -> bool: ...
    @property
    def is_stopping(self) -> bool: ...
    @property
    def events(self) -> EventSource: ...
    def snapshots(self) -> Sequence[Snapshot]: ...
    def credentials(self, name: str) -> dict[str, Any] | None:
        """How to connect to `name` (None: not running); KeyError if no such resource,
        LookupError if its kind has no credentials."""

    def command(self, name: str, action: str) -> Snapshot:
        """Apply start/stop/restart to `name`; KeyError if there is no such resource."""

    async def reload(self, *, dry_run: bool) -> dict[str, Any]:
        """Reload the config; ConfigError if invalid, NotImplementedError if unsupported."""

    async def render_metrics(self) -> bytes: ...
    @property
    def sandboxes(self) -> Sandboxes | None:
        """The environments and sessions, or None when the daemon serves none."""


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    422: "unprocessable",
    501: "not_implemented",
    503: "unavailable",
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = exc.code if isinstance(exc, ApiError) else _CODES.get(exc.status_code, "error")
    retryable = exc.retryable if isinstance(exc, ApiError) else exc.status_code == 503
    message = exc.detail
    if exc.status_code == 404 and not isinstance(exc, ApiError):
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405 and not isinstance(exc, ApiError):
        message = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, code, message, retryable=retryable, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal", f"internal error: {type(exc).__name__}", retryable=True)


def resource_json(snap: Snapshot) -> dict[str, Any]:
    """A resource as the API shows it; never carries a secret."""
    return {
        "name": snap.name,
        "kind": snap.kind,
        "state": snap.state.value,
        "liveness": snap.liveness.value,
        "detail": snap.detail,
        "restarts": snap.restarts,
        "since": round(time.time() - (trio.current_time() - snap.since), 3),
        "pid": snap.pid,
        "container_id": snap.ident,
        "endpoint": snap.endpoint,
        **({"deephaven": snap.identity} if snap.identity else {}),
    }


def resource_routes(control: Control) -> list[Route]:
    """/v1/resources: status, credentials and start/stop/restart."""

    async def list_resources(request: Request) -> Response:
        return JSONResponse({"resources": [resource_json(s) for s in control.snapshots()]})

    async def get_resource(request: Request) -> Response:
        name = request.path_params["name"]
        for snap in control.snapshots():
            if snap.name == name:
                return JSONResponse(resource_json(snap))
        raise ApiError(404, "not_found", f"no resource named {name!r}")

    async def credentials(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            creds = control.credentials(name)
        except KeyError:
            raise ApiError(404, "not_found", f"no resource named {name!r}") from None
        except LookupError as exc:
            raise ApiError(404, "no_credentials", str(exc)) from None
        if creds is None:
            raise ApiError(
                409, "not_running", f"{name} is not running: no credentials yet", retryable=True
            )
        return JSONResponse(creds, headers={"cache-control": "no-store"})

    async def act(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ACTIONS:
            raise ApiError(
                404, "not_found", f"unknown action {action!r} (use one of: {', '.join(ACTIONS)})"
            )
        await read_json(request)
        try:
            snap = control.command(name, action)
        except KeyError:
            raise ApiError(404, "not_found", f"no resource named {name!r}") from None
        return JSONResponse(
            {"name": name, "action": action, "state": snap.state.value}, status_code=202
        )

    return [
        Route("/v1/resources", list_resources, methods=["GET"]),
        Route("/v1/resources/{name}", get_resource, methods=["GET"]),
        Route("/v1/resources/{name}/credentials", credentials, methods=["GET"]),
        Route("/v1/resources/{name}/{action}", act, methods=["POST"]),
    ]


def build_app(
    control: Control,
    *,
    token: bytes | None = None,
    tcp: bool = False,
    closing: trio.Event | None = None,
) -> ASGIApp:
    """The API app for one listener; `tcp=True` guards /v1 with `token`."""
    closing = trio.Event() if closing is None else closing

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if control.is_stopping:
            return error_response(503, "stopping", "the daemon is stopping", retryable=True)
        if not control.is_ready:
            return error_response(503, "starting", "the daemon is starting", retryable=True)
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        return Response(
            await control.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def reload(request: Request) -> Response:
        body = await read_json(request)
        dry_run = body.get(
            "dry_run", request.query_params.get("dry_run", "") in ("1", "true", "yes")
        )
        if not isinstance(dry_run, bool):
            raise ApiError(422, "unprocessable", "dry_run must be true or false")
        if control.is_stopping:
            raise ApiError(503, "stopping", "the daemon is stopping", retryable=False)
        try:
            plan = await control.reload(dry_run=dry_run)
        except ConfigError as exc:
            problems = [{"path": p.path, "message": p.message} for p in exc.problems]
            return JSONResponse(
                {
                    "error": {
                        "code": "invalid_config",
                        "message": str(exc),
                        "retryable": False,
                        "problems": problems,
                    }
                },
                status_code=422,
            )
        except NotImplementedError as exc:
            raise ApiError(501, "not_implemented", str(exc)) from None
        return JSONResponse(plan)

    async def events(request: Request) -> Response:
        raw = request.query_params.get("since", request.headers.get("last-event-id"))
        source = control.events
        if raw is None:
            since = source.last_seq
        elif raw.isdigit():
            since = int(raw)
        else:
            raise ApiError(400, "bad_request", f"since must be a non-negative integer, got {raw!r}")
        return _ClosingStream(
            _event_stream(source, since, closing),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *resource_routes(control),
            Route("/v1/reload", reload, methods=["POST"]),
            Route("/v1/events", events, methods=["GET"]),
            *(sandbox_routes(control.sandboxes) if control.sandboxes is not None else ()),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    return _BearerGuard(app, token) if tcp else app


def _sse(event: str, data: dict[str, Any], seq: int | None = None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _event_stream(
    source: EventSource, since: int, closing: trio.Event
) -> AsyncIterator[bytes]:
    """Replay from the ring, then follow live; resume from the ring if cut off as too slow."""
    last = since
    while not closing.is_set():
        async with source.subscribe() as live:
            kept, gap = source.replay(last)
            if gap:
                first = kept[0].seq if kept else source.last_seq + 1
                yield _sse("gap", {"since": last, "first_available": first})
            for old in kept:
                yield _sse("transition", old.to_json(), old.seq)
                last = old.seq
            idle = 0.0
            while not closing.is_set():
                event: Transition | None = None
                with trio.move_on_after(1.0):
                    try:
                        event = await live.receive()
                    except trio.EndOfChannel:
                        break  # cut off as too slow: resume from the ring
                if event is None:
                    idle += 1.0
                    if idle >= HEARTBEAT:
                        idle = 0.0
                        yield b": keepalive\n\n"
                    continue
                idle = 0.0
                if event.seq > last:
                    yield _sse("transition", event.to_json(), event.seq)
                    last = event.seq


class _ClosingStream(StreamingResponse):
    """A streaming response that closes its generator when the client goes away.

    Starlette abandons the body iterator on disconnect; an async generator left to the
    garbage collector may never run its cleanup (here: leaving the bus subscription).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            closer = getattr(self.body_iterator, "aclose", None)
            if closer is not None:
                with trio.CancelScope(shield=True):
                    await closer()


class _BearerGuard:
    """ASGI middleware: /v1 over TCP needs `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: bytes | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        if self.token is None:
            response = error_response(
                403,
                "forbidden",
                "the /v1 API is not available over TCP: set daemon.api_token_file, or use the unix socket",
            )
            await response(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, presented = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(presented.strip(), self.token):
            message = "missing bearer token" if not header else "invalid bearer token"
            response = error_response(
                401, "unauthorized", message, headers={"www-authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
