"""The environments and sessions part of the API: /v1/environments and /v1/sessions.

Handlers validate the request (`api.requests`) and call the service; its errors carry
their own answers (`api.errors`): 404 for an unknown environment or session, 410 for a
session the daemon already ended (its TTL or lease ran out), 503 with `Retry-After` when
the pool is overloaded or in an outage, 409 for a session that is being released, and
503 `sandbox_failed` when the sandbox broke under a command (the session is over:
acquire a new one). An exec asked for with `Accept: application/x-ndjson` streams its
output as it comes (`api.streaming`); one with `background: true` answers 202 with a
handle at once (`api.commands`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from supervisor.api import models
from supervisor.api.commands import CommandsView, command_routes
from supervisor.api.edge import StreamSlots
from supervisor.api.files import FileSandboxes, file_routes
from supervisor.api.models import reply
from supervisor.api.requests import (
    MAX_LABEL_LENGTH,
    AcquireRequest,
    Empty,
    ExecRequest,
    header_text,
    parse_body,
)
from supervisor.api.spec import NDJSON, ApiRoute, Media, Operation, Param
from supervisor.api.streaming import StreamedExec, wants_stream

ENV = Param("env", "path", "the environment's name (a key of [environments])")
SESSION = Param("id", "path", "the session's id (from acquire)")
LIST_ENVIRONMENTS = Operation(
    "Every environment's status", {200: models.Environments}, access="read"
)
GET_ENVIRONMENT = Operation(
    "One environment's status", {200: models.Environment}, errors=(404,), params=(ENV,),
    access="read",
)  # fmt: skip
RESTART_ENVIRONMENT = Operation(
    "Rebuild an environment now (its sessions end)",
    {202: models.Environment},
    errors=(404,),
    body=Empty,
    params=(ENV,),
)
ACQUIRE = Operation(
    "Acquire a session in an environment (201: new; 200: the Idempotency-Key's session)",
    {201: models.AcquiredSession, 200: models.AcquiredSession},
    errors=(404, 422, 503),
    body=AcquireRequest,
    params=(
        ENV,
        Param("Idempotency-Key", "header", "the same key gives the same session", {
            "type": "string", "minLength": 1, "maxLength": MAX_LABEL_LENGTH,
        }),
    ),
    description="503 (`overloaded`, `offline`, `outage`) comes with `Retry-After`.",
)  # fmt: skip
LIST_SESSIONS = Operation(
    "An environment's sessions in progress, with their lease times",
    {200: models.Sessions},
    errors=(404,),
    params=(ENV,),
)
GET_SESSION = Operation("One session", {200: models.Session}, errors=(404, 410), params=(SESSION,))
RELEASE = Operation(
    "Release a session (204; 200 with the error when a feature failed to clean up)",
    {204: None, 200: models.Released},
    errors=(404, 409, 410),
    params=(SESSION,),
)
HEARTBEAT = Operation(
    "Renew a session's lease", {200: models.Session}, errors=(404, 410), body=Empty,
    params=(SESSION,),
)  # fmt: skip
EXEC = Operation(
    "Run a command in the session's sandbox",
    {
        200: (
            models.ExecResult,
            Media(
                (NDJSON,),
                "with `Accept: application/x-ndjson`: output frames as they come, then "
                "the result (or an error) as the last line",
                frames=models.ExecFrame,
            ),
        ),
        202: models.Command,
    },
    errors=(400, 404, 409, 410, 503),
    body=ExecRequest,
    params=(SESSION,),
    description="`background: true` answers 202 with the command's handle at once.",
)


class JsonView(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class SessionView(JsonView, Protocol):
    def connection(self) -> dict[str, Any]: ...


class EnvironmentView(Protocol):
    def stats(self) -> dict[str, Any]: ...


class Sandboxes(FileSandboxes, Protocol):
    """What the API needs from the daemon's sandbox service."""

    def stats(self) -> list[dict[str, Any]]: ...
    def environment(self, name: str) -> EnvironmentView: ...
    def restart(self, name: str) -> dict[str, Any]: ...
    def session(self, session_id: str) -> SessionView: ...
    def sessions(self, name: str) -> Sequence[JsonView]: ...
    def heartbeat(self, session_id: str) -> SessionView: ...
    async def acquire(
        self,
        env_name: str,
        *,
        ttl: float | None = ...,
        wait: float | None = ...,
        labels: Mapping[str, str] | None = ...,
        idempotency_key: str | None = ...,
    ) -> tuple[SessionView, bool]: ...
    async def exec(
        self,
        session_id: str,
        *,
        command: Sequence[str] | None = ...,
        script: str | None = ...,
        timeout: float | None = ...,
        env: Mapping[str, str] | None = ...,
        cwd: str | None = ...,
        stdin: bytes | None = ...,
        output: Callable[[str, bytes], None] | None = ...,
    ) -> JsonView: ...
    def start_command(
        self,
        session_id: str,
        *,
        command: Sequence[str] | None = ...,
        script: str | None = ...,
        timeout: float | None = ...,
        env: Mapping[str, str] | None = ...,
        cwd: str | None = ...,
        stdin: bytes | None = ...,
    ) -> JsonView: ...
    def commands(self, session_id: str) -> CommandsView: ...
    async def release(self, session_id: str) -> Exception | None: ...


def sandbox_routes(sandboxes: Sandboxes, streams: StreamSlots | None = None) -> list[BaseRoute]:
    """The routes, bound to `sandboxes`; a streamed exec takes a slot of `streams`."""
    streams = StreamSlots(128) if streams is None else streams

    async def list_environments(request: Request) -> Response:
        return reply(models.Environments.model_validate({"environments": sandboxes.stats()}))

    async def get_environment(request: Request) -> Response:
        stats = sandboxes.environment(request.path_params["env"]).stats()
        return reply(models.Environment.model_validate(stats))

    async def restart(request: Request) -> Response:
        await parse_body(request, Empty)
        stats = sandboxes.restart(request.path_params["env"])
        return reply(models.Environment.model_validate(stats), 202)

    async def acquire(request: Request) -> Response:
        name = request.path_params["env"]
        body = await parse_body(request, AcquireRequest)
        key = header_text(request, "idempotency-key", max_length=MAX_LABEL_LENGTH)
        sandboxes.environment(name)  # 404 before anything else
        session, created = await sandboxes.acquire(
            name, ttl=body.ttl, wait=body.wait, labels=body.labels, idempotency_key=key
        )
        data = {**session.to_json(), "connection": session.connection()}
        return reply(models.AcquiredSession.model_validate(data), 201 if created else 200)

    async def list_sessions(request: Request) -> Response:
        found = sandboxes.sessions(request.path_params["env"])
        return reply(models.Sessions.model_validate({"sessions": [s.to_json() for s in found]}))

    async def get_session(request: Request) -> Response:
        return reply(
            models.Session.model_validate(sandboxes.session(request.path_params["id"]).to_json())
        )

    async def heartbeat(request: Request) -> Response:
        await parse_body(request, Empty)
        session = sandboxes.heartbeat(request.path_params["id"])
        return reply(models.Session.model_validate(session.to_json()))

    async def exec_in(request: Request) -> Response:
        body = await parse_body(request, ExecRequest)
        if body.background:
            started = sandboxes.start_command(
                request.path_params["id"],
                command=body.command,
                script=body.script,
                timeout=body.timeout,
                env=body.env,
                cwd=body.cwd,
                stdin=None if body.stdin is None else body.stdin.encode(errors="replace"),
            )
            return reply(models.Command.model_validate(started.to_json()), 202)
        run = partial(
            sandboxes.exec,
            request.path_params["id"],
            command=body.command,
            script=body.script,
            timeout=body.timeout,
            env=body.env,
            cwd=body.cwd,
            stdin=None if body.stdin is None else body.stdin.encode(errors="replace"),
        )
        if wants_stream(request):
            sandboxes.session(request.path_params["id"])  # 404 or 410 before a slot
            release = streams.take()
            return StreamedExec(lambda sink: run(output=sink), on_close=release)
        result = await run()
        return reply(models.ExecResult.model_validate(result.to_json()))

    async def release(request: Request) -> Response:
        failure = await sandboxes.release(request.path_params["id"])
        if failure is not None:
            return reply(models.Released(released=True, teardown_error=str(failure)))
        return Response(status_code=204)

    return [
        ApiRoute("/v1/environments", list_environments, "GET", LIST_ENVIRONMENTS),
        ApiRoute("/v1/environments/{env}", get_environment, "GET", GET_ENVIRONMENT),
        ApiRoute("/v1/environments/{env}/sessions", acquire, "POST", ACQUIRE),
        ApiRoute("/v1/environments/{env}/sessions", list_sessions, "GET", LIST_SESSIONS),
        ApiRoute("/v1/environments/{env}/restart", restart, "POST", RESTART_ENVIRONMENT),
        ApiRoute("/v1/sessions/{id}", get_session, "GET", GET_SESSION),
        ApiRoute("/v1/sessions/{id}", release, "DELETE", RELEASE),
        ApiRoute("/v1/sessions/{id}/heartbeat", heartbeat, "POST", HEARTBEAT),
        ApiRoute("/v1/sessions/{id}/exec", exec_in, "POST", EXEC),
        *file_routes(sandboxes),
        *command_routes(sandboxes.commands, streams),
    ]
