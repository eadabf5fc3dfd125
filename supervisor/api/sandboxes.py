"""The environments and sessions part of the API: /v1/environments and /v1/sessions.

Errors map to status codes a client can act on: 404 for an unknown environment or
session, 410 for a session the daemon already ended (its TTL or lease ran out), 503 with
`Retry-After` when the pool is overloaded or in an outage, 409 for a session that is
being released, and 503 `sandbox_failed` when the sandbox broke under a command (the
session is over: acquire a new one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from supervisor.api.responses import ApiError, read_json
from supervisor.config.durations import parse_duration
from supervisor.errors import (
    AcquireError,
    EnvironmentOutageError,
    PoolOverloadedError,
    SandboxError,
    SandboxStateError,
    SessionExpiredError,
    SessionNotFoundError,
)

MAX_LABELS = 32
MAX_LABEL_LENGTH = 256
MAX_TIMEOUT = 86_400.0


class JsonView(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class SessionView(JsonView, Protocol):
    def connection(self) -> dict[str, Any]: ...


class EnvironmentView(Protocol):
    def stats(self) -> dict[str, Any]: ...


class Sandboxes(Protocol):
    """What the API needs from the daemon's sandbox service."""

    def stats(self) -> list[dict[str, Any]]: ...
    def environment(self, name: str) -> EnvironmentView: ...
    def session(self, session_id: str) -> SessionView: ...
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
    ) -> JsonView: ...
    async def release(self, session_id: str) -> Exception | None: ...


def _seconds(body: Mapping[str, Any], key: str, *, allow_zero: bool = False) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except (ValueError, OverflowError) as exc:
        raise ApiError(422, "unprocessable", f"{key}: {exc}") from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ApiError(422, "unprocessable", f"{key} must be a positive duration")
    if seconds > MAX_TIMEOUT:
        raise ApiError(422, "unprocessable", f"{key} must be at most {MAX_TIMEOUT:g}s")
    return seconds


def _labels(body: Mapping[str, Any]) -> dict[str, str] | None:
    labels = body.get("labels")
    if labels is None:
        return None
    if (
        not isinstance(labels, dict)
        or len(labels) > MAX_LABELS
        or not all(
            isinstance(k, str)
            and isinstance(v, str)
            and len(k) <= MAX_LABEL_LENGTH
            and len(v) <= MAX_LABEL_LENGTH
            for k, v in labels.items()
        )
    ):
        raise ApiError(
            422,
            "unprocessable",
            f"labels must be an object of at most {MAX_LABELS} string values "
            f"(each at most {MAX_LABEL_LENGTH} characters)",
        )
    return labels


def _idempotency_key(key: str | None) -> str | None:
    if key is not None and not 0 < len(key) <= MAX_LABEL_LENGTH:
        raise ApiError(422, "unprocessable", "Idempotency-Key must be 1-256 characters")
    return key


def _exec_request(body: Mapping[str, Any]) -> tuple[list[str] | None, str | None, float | None]:
    command, script = body.get("command"), body.get("script")
    if (command is None) == (script is None):
        raise ApiError(422, "unprocessable", "give exactly one of command or script")
    if command is not None and (
        not isinstance(command, list)
        or not command
        or not all(isinstance(a, str) and a for a in command)
    ):
        raise ApiError(422, "unprocessable", "command must be a non-empty list of strings")
    if script is not None and not isinstance(script, str):
        raise ApiError(422, "unprocessable", "script must be a string")
    if "\x00" in (script or "") or any("\x00" in a for a in command or ()):
        raise ApiError(422, "unprocessable", "command and script cannot contain NUL bytes")
    return command, script, _seconds(body, "timeout")


def _session_error(exc: Exception) -> ApiError:
    if isinstance(exc, SessionNotFoundError):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, SessionExpiredError):
        return ApiError(410, "expired", str(exc))
    if isinstance(exc, SandboxStateError):
        return ApiError(
            503,
            "sandbox_failed",
            f"{exc} (the session has ended: acquire a new one)",
            retryable=True,
        )
    if isinstance(exc, RuntimeError):
        return ApiError(409, "conflict", str(exc))
    if isinstance(exc, AcquireError):
        return _acquire_error(exc)
    raise exc


def _acquire_error(exc: AcquireError) -> ApiError:
    code = (
        "overloaded"
        if isinstance(exc, PoolOverloadedError)
        else "outage"
        if isinstance(exc, EnvironmentOutageError)
        else "offline"
    )
    error = ApiError(503, code, str(exc), retryable=True)
    retry_after = exc.retry_after if exc.retry_after is not None else 5.0
    error.headers = {"retry-after": str(max(1, math.ceil(retry_after)))}
    return error


def sandbox_routes(sandboxes: Sandboxes) -> list[Route]:
    """The routes, bound to `sandboxes`."""

    async def list_environments(request: Request) -> Response:
        return JSONResponse({"environments": sandboxes.stats()})

    async def get_environment(request: Request) -> Response:
        name = request.path_params["env"]
        try:
            return JSONResponse(sandboxes.environment(name).stats())
        except KeyError:
            raise ApiError(404, "not_found", f"no environment named {name!r}") from None

    async def acquire(request: Request) -> Response:
        name = request.path_params["env"]
        body = await read_json(request)
        ttl, wait, labels = (
            _seconds(body, "ttl"),
            _seconds(body, "wait", allow_zero=True),
            _labels(body),
        )
        key = _idempotency_key(request.headers.get("idempotency-key"))
        try:
            sandboxes.environment(name)
        except KeyError:
            raise ApiError(404, "not_found", f"no environment named {name!r}") from None
        try:
            session, created = await sandboxes.acquire(
                name, ttl=ttl, wait=wait, labels=labels, idempotency_key=key
            )
        except AcquireError as exc:
            raise _acquire_error(exc) from None
        except (SandboxStateError, RuntimeError) as exc:
            # The sandbox broke between being handed out and the session starting.
            raise ApiError(503, "sandbox_failed", str(exc), retryable=True) from None
        except SandboxError as exc:
            raise ApiError(500, "sandbox_setup_failed", str(exc)) from None
        data = {**session.to_json(), "connection": session.connection()}
        return JSONResponse(data, status_code=201 if created else 200)

    async def get_session(request: Request) -> Response:
        try:
            session = sandboxes.session(request.path_params["id"])
        except SandboxError as exc:
            raise _session_error(exc) from None
        return JSONResponse(session.to_json())

    async def heartbeat(request: Request) -> Response:
        await read_json(request)
        try:
            session = sandboxes.heartbeat(request.path_params["id"])
        except SandboxError as exc:
            raise _session_error(exc) from None
        return JSONResponse(session.to_json())

    async def exec_in(request: Request) -> Response:
        command, script, timeout = _exec_request(await read_json(request))
        try:
            result = await sandboxes.exec(
                request.path_params["id"], command=command, script=script, timeout=timeout
            )
        except (SandboxError, RuntimeError) as exc:
            raise _session_error(exc) from None
        return JSONResponse(result.to_json())

    async def release(request: Request) -> Response:
        try:
            failure = await sandboxes.release(request.path_params["id"])
        except SandboxError as exc:
            raise _session_error(exc) from None
        if failure is not None:
            return JSONResponse({"released": True, "teardown_error": str(failure)})
        return Response(status_code=204)

    return [
        Route("/v1/environments", list_environments, methods=["GET"]),
        Route("/v1/environments/{env}", get_environment, methods=["GET"]),
        Route("/v1/environments/{env}/sessions", acquire, methods=["POST"]),
        Route("/v1/sessions/{id}", get_session, methods=["GET"]),
        Route("/v1/sessions/{id}", release, methods=["DELETE"]),
        Route("/v1/sessions/{id}/heartbeat", heartbeat, methods=["POST"]),
        Route("/v1/sessions/{id}/exec", exec_in, methods=["POST"]),
    ]
