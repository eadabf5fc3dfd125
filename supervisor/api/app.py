"""The HTTP/JSON API as an ASGI app (Starlette), over a small `Control` protocol.

The app knows nothing of supervisors or launchers: the daemon implements `Control`. One
app is built per listener: the unix socket (trusted by file permissions) and TCP (where
`/v1` needs a bearer token, `api.access`). Every route is an `ApiRoute` declaring its
request, answers and access (`api.spec`); `/v1/openapi.json` is generated from them
(`api.openapi`). Handlers take validated requests
(`api.requests`) and raise domain errors, which `api.errors` maps to one answer shape:
`{"error": {"code", "message", "retryable"}}`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor.api import models
from supervisor.api.access import AccessGuard, Tokens
from supervisor.api.console import console_routes
from supervisor.api.cookies import ConsoleSessions
from supervisor.api.edge import BodyLimit, StreamSlots, compressed
from supervisor.api.errors import EXCEPTION_HANDLERS, ApiError, error_response
from supervisor.api.files import body_limit
from supervisor.api.glance import Glanced, glance_routes
from supervisor.api.logs import log_routes
from supervisor.api.models import reply
from supervisor.api.openapi import openapi_route
from supervisor.api.operator import Operated, operator_routes, query_patterns, selected
from supervisor.api.requests import (
    MAX_JSON_BODY,
    MAX_PATTERNS,
    Empty,
    ReloadRequest,
    parse_body,
    query_bool,
    query_int,
)
from supervisor.api.sandboxes import Sandboxes, sandbox_routes
from supervisor.api.spec import SSE, ApiRoute, Media, Operation, Param
from supervisor.errors import DaemonStoppingError, ResourceNotFoundError
from supervisor.supervision.resource import OutputSource
from supervisor.supervision.settings import Snapshot
from supervisor.supervision.states import Transition

HEARTBEAT = 15.0
ACTIONS = ("start", "stop", "restart")

NAME = Param("name", "path", "the resource's name (a key of [resources])")
HEALTHZ = Operation("Liveness: 200 while the event loop runs", {200: models.Status})
READYZ = Operation(
    "Readiness: 200 once started, 503 while starting or stopping",
    {200: models.Status},
    errors=(503,),
)
METRICS = Operation(
    "Prometheus metrics",
    {200: Media(("text/plain",), "the Prometheus text exposition format, version 0.0.4")},
)
LIST_RESOURCES = Operation(
    "Every resource's status, or those the `name` patterns select",
    {200: models.Resources},
    errors=(400, 404),
    params=(
        Param(
            "name",
            "query",
            "a name or pattern (`web`, `web:*`, `GROUP`, `GROUP:*`, a glob, `all`); repeatable; "
            "404 names one that matches nothing",
            {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 200},
                "maxItems": MAX_PATTERNS,
            },
        ),
    ),
    access="read",
)
GET_RESOURCE = Operation(
    "One resource's status", {200: models.Resource}, errors=(404,), params=(NAME,), access="read"
)
CREDENTIALS = Operation(
    "How to connect to a Deephaven resource (a secret: the full token only)",
    {200: models.Credentials},
    errors=(404, 409),
    params=(NAME,),
)
ACT = Operation(
    "Start, stop or restart a resource; answers the state right after",
    {202: models.ActionTaken},
    errors=(404,),
    body=Empty,
    params=(
        NAME,
        Param("action", "path", "what to do", {"type": "string", "enum": list(ACTIONS)}),
    ),
)
RELOAD = Operation(
    "Reload the config file (or, with dry_run, say what a reload would do)",
    {200: models.ReloadPlan},
    errors=(409, 501, 503),
    body=ReloadRequest,
    params=(Param("dry_run", "query", "only plan", {"type": "boolean"}),),
    description="422 `invalid_config` lists the problems; the running config is untouched. "
    "Every answer carries the plan's `hash` (of the running config and the file's). To "
    "apply only a plan that was shown, send that hash back as `plan`: 409 `plan_changed` "
    "if the file (or the running config) changed since, and nothing is applied.",
)
EVENTS = Operation(
    "Every state transition, replayed from `since` then followed live",
    {
        200: (
            Media(
                (SSE,),
                "server-sent events: `transition` (data: an Event, id: its seq), `gap` "
                "(events lost from the ring: {since, first_available, reset?}), `: keepalive` "
                "comments",
                frames=models.Event,
            ),
            models.RecentEvents,
        ),
    },
    errors=(400, 503),
    params=(
        Param("since", "query", "replay events after this sequence number", {
            "type": "integer", "minimum": 0, "maximum": 2**63 - 1,
        }),
        Param("follow", "query", "false: answer the kept events as one JSON object", {
            "type": "boolean",
        }),
        Param("name", "query", "with follow=false: only the events of this subject name", {
            "type": "string", "minLength": 1, "maxLength": 200,
        }),
        Param("Last-Event-ID", "header", "resume after this sequence number (SSE)", {
            "type": "string", "pattern": "^[0-9]{1,19}$",
        }),
    ),
    access="read",
)  # fmt: skip


class EventSource(Protocol):
    @property
    def last_seq(self) -> int: ...
    def replay(self, since: int) -> tuple[list[Transition], bool]: ...
    def subscribe(self, buffer: int = ...) -> Any: ...


class Control(Operated, Glanced, Protocol):
    """What the API needs from the daemon."""

    @property
    def is_ready(self) -> bool: ...
    @property
    def is_stopping(self) -> bool: ...
    @property
    def events(self) -> EventSource: ...
    def snapshots(self) -> Sequence[Snapshot]: ...
    def credentials(self, name: str) -> dict[str, Any]:
        """How to connect to `name`.

        Raises:
            ResourceNotFoundError, NoCredentialsError, NotRunningError.
        """

    def output(self, name: str) -> OutputSource:
        """`name`'s program output (ResourceNotFoundError, NoOutputError)."""

    def command(self, name: str, action: str) -> Snapshot:
        """Apply start/stop/restart to `name` (ResourceNotFoundError if unknown)."""

    async def reload(self, *, dry_run: bool, plan: str | None = None) -> dict[str, Any]:
        """Reload the config (ConfigError if invalid, ReloadUnavailableError if there is
        no file, PlanChangedError if `plan` is not the hash of the plan it makes)."""

    async def render_metrics(self) -> bytes: ...
    @property
    def sandboxes(self) -> Sandboxes | None:
        """The environments and sessions, or None when the daemon serves none."""


def resource_view(snap: Snapshot) -> models.Resource:
    """A resource as the API shows it; never carries a secret."""
    return models.Resource(
        name=snap.name,
        kind=snap.kind,
        state=snap.state.value,
        liveness=snap.liveness.value,
        detail=snap.detail,
        restarts=snap.restarts,
        since=round(time.time() - (trio.current_time() - snap.since), 3),
        pid=snap.pid,
        container_id=snap.ident,
        endpoint=snap.endpoint,
        deephaven=snap.identity or None,
    )


def resource_routes(control: Control) -> list[BaseRoute]:
    """/v1/resources: status, credentials and start/stop/restart."""

    async def list_resources(request: Request) -> Response:
        snaps = selected(control, query_patterns(request))  # `?name=PATTERN`, repeatable
        return reply(models.Resources(resources=[resource_view(s) for s in snaps]))

    async def get_resource(request: Request) -> Response:
        name = request.path_params["name"]
        for snap in control.snapshots():
            if snap.name == name:
                return reply(resource_view(snap))
        raise ResourceNotFoundError(f"no resource named {name[:100]!r}")

    async def credentials(request: Request) -> Response:
        creds = control.credentials(request.path_params["name"])
        return reply(
            models.Credentials.model_validate(creds), headers={"cache-control": "no-store"}
        )

    async def act(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ACTIONS:
            raise ApiError(
                404,
                "not_found",
                f"unknown action {action[:40]!r} (use one of: {', '.join(ACTIONS)})",
            )
        await parse_body(request, Empty)
        snap = control.command(name, action)
        taken = models.ActionTaken(name=name, action=action, state=snap.state.value)
        return reply(taken, 202)

    return [
        ApiRoute("/v1/resources", list_resources, "GET", LIST_RESOURCES),
        ApiRoute("/v1/resources/{name}", get_resource, "GET", GET_RESOURCE),
        ApiRoute("/v1/resources/{name}/credentials", credentials, "GET", CREDENTIALS),
        ApiRoute("/v1/resources/{name}/{action}", act, "POST", ACT),
    ]


def build_app(
    control: Control,
    *,
    tokens: Tokens | None = None,
    tcp: bool = False,
    closing: trio.Event | None = None,
    streams: StreamSlots | None = None,
    body_idle: float = 10.0,
    mounts: Sequence[BaseRoute] = (),
    secure: bool = False,
) -> ASGIApp:
    """The API app for one listener; `tcp=True` guards /v1 (and /mcp) with `tokens`
    (`api.access`), serves the web console (`api.console`; its cookie is `secure`
    on TLS) and gzips what is worth it (`api.edge.compressed`); long-lived streams take a slot of `streams`; `mounts` are more routes (the
    daemon's MCP endpoint), outside the API's description."""
    tokens = Tokens() if tokens is None else tokens
    sessions = ConsoleSessions(secure=secure)
    routes = api_routes(
        control,
        closing=trio.Event() if closing is None else closing,
        streams=StreamSlots(128) if streams is None else streams,
        console=console_routes(tokens, sessions) if tcp else (),
    )
    routes += mounts
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    # A redirect for a trailing slash would build its Location from the Host header.
    app.router.redirect_slashes = False
    guarded = AccessGuard(app, app.routes, tokens, sessions) if tcp else app
    limited = BodyLimit(guarded, body_limit(control.sandboxes, MAX_JSON_BODY), body_idle)
    return compressed(limited) if tcp else limited


def api_routes(
    control: Control,
    *,
    closing: trio.Event,
    streams: StreamSlots,
    console: Sequence[BaseRoute] = (),
) -> list[BaseRoute]:
    """Every route of the API, `/v1/openapi.json` (describing them all) included, and the
    `console`'s routes (TCP only)."""

    async def healthz(request: Request) -> Response:
        return reply(models.Status(status="ok"))

    async def readyz(request: Request) -> Response:
        if control.is_stopping:
            return error_response(503, "stopping", "the daemon is stopping", retryable=True)
        if not control.is_ready:
            return error_response(503, "starting", "the daemon is starting", retryable=True)
        return reply(models.Status(status="ready"))

    async def metrics(request: Request) -> Response:
        return Response(
            await control.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def reload(request: Request) -> Response:
        body = await parse_body(request, ReloadRequest)
        dry_run = body.dry_run or bool(query_bool(request, "dry_run"))
        if control.is_stopping:
            raise DaemonStoppingError("the daemon is stopping")
        done = await control.reload(dry_run=dry_run, plan=body.plan)
        return reply(models.ReloadPlan.model_validate(done))

    async def events(request: Request) -> Response:
        source = control.events
        since = query_int(request, "since")
        if since is None and (resume := request.headers.get("last-event-id")) is not None:
            if not resume.isascii() or not resume.isdigit() or len(resume) > 19:
                raise ApiError(400, "bad_request", "Last-Event-ID: expected a sequence number")
            since = int(resume)
        if query_bool(request, "follow") is False:
            # What the ring holds after `since`, as one JSON answer (agents, scripts).
            kept, gap = source.replay(0 if since is None else since)
            if (name := request.query_params.get("name")) is not None:
                kept = [e for e in kept if e.name == name[:200]]  # one resource's page
            recent = [models.Event.model_validate(e.to_json()) for e in kept]
            return reply(models.RecentEvents(events=recent, gap=gap))
        release = streams.take()
        return _ClosingStream(
            _event_stream(source, source.last_seq if since is None else since, closing),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            on_close=release,
        )

    routes: list[BaseRoute] = [
        ApiRoute("/healthz", healthz, "GET", HEALTHZ),
        ApiRoute("/readyz", readyz, "GET", READYZ),
        ApiRoute("/metrics", metrics, "GET", METRICS),
        *operator_routes(control),  # before resource_routes: /v1/resources/{name}/signal
        *resource_routes(control),
        *log_routes(control, streams, closing),
        ApiRoute("/v1/reload", reload, "POST", RELOAD),
        ApiRoute("/v1/events", events, "GET", EVENTS),
        *glance_routes(control),
        *(sandbox_routes(control.sandboxes, streams) if control.sandboxes is not None else ()),
        *console,
    ]
    return [*routes, openapi_route(routes)]


def _sse(event: str, data: dict[str, Any], seq: int | None = None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _event_stream(
    source: EventSource, since: int, closing: trio.Event
) -> AsyncIterator[bytes]:
    """Replay from the ring, then follow live; resume from the ring if cut off as too slow."""
    last = since
    if since > source.last_seq:
        # From a previous run of the daemon (its sequence starts again at 1): say so, and
        # give this run's events from the start.
        kept, _ = source.replay(0)
        first = kept[0].seq if kept else source.last_seq + 1
        yield _sse("gap", {"since": since, "first_available": first, "reset": True})
        last = 0
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
    """A streaming response that closes its generator when the client goes away, and
    gives back its stream slot.

    Starlette abandons the body iterator on disconnect; an async generator left to the
    garbage collector may never run its cleanup (here: leaving the bus subscription).
    """

    def __init__(self, *args: Any, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
            closer = getattr(self.body_iterator, "aclose", None)
            if closer is not None:
                with trio.CancelScope(shield=True):
                    await closer()
