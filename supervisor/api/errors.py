"""Every error the API answers with: one table from domain errors to status and code.

Route handlers raise; they never map. A domain error (`supervisor.errors`) is looked up
along its class's MRO in `ERRORS`, so a subclass inherits its parent's answer unless it
has a row of its own; a test walks the whole exception tree and fails on any error the
daemon can raise that resolves to no row. `ApiError` is for what only HTTP knows (a bad
body, an unknown endpoint); anything else that escapes a handler is a bug, answered 500
with the exception's type and logged, never with its text (it may hold a secret).

Every answer has one shape: `{"error": {"code", "message", "retryable"}}`, plus
`problems` for a refused config and `Retry-After` for an overloaded pool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from supervisor.errors import (
    AcquireError,
    ConfigError,
    ConflictError,
    DaemonStoppingError,
    EnvironmentOfflineError,
    EnvironmentOutageError,
    ExecRefusedError,
    FeatureCommandError,
    MisconfiguredError,
    NoCredentialsError,
    NoOutputError,
    NotFoundError,
    NotRunningError,
    PlanChangedError,
    PoolOverloadedError,
    ReloadUnavailableError,
    ResourceError,
    SandboxError,
    SandboxFileError,
    SandboxPathNotFoundError,
    SandboxStateError,
    SessionBusyError,
    SessionExpiredError,
    SessionLimitError,
    SessionNotFoundError,
    SupervisorError,
    TransferTooLargeError,
    UnsafePathError,
    UnsupportedError,
)

log = structlog.get_logger("supervisor.api")


@dataclass(frozen=True, slots=True)
class Answer:
    """How the API answers one kind of error."""

    status: int
    code: str
    retryable: bool = False


ERRORS: Mapping[type[SupervisorError], Answer] = {
    NotFoundError: Answer(404, "not_found"),
    NoCredentialsError: Answer(404, "no_credentials"),
    NoOutputError: Answer(404, "no_output"),
    ConflictError: Answer(409, "conflict"),
    NotRunningError: Answer(409, "not_running", retryable=True),
    PlanChangedError: Answer(409, "plan_changed"),
    SessionExpiredError: Answer(410, "expired"),
    # Both a session error and a general one: their own rows, not the MRO's first hit.
    SessionNotFoundError: Answer(404, "not_found"),
    SessionBusyError: Answer(409, "conflict"),
    SessionLimitError: Answer(422, "over_limit"),
    ConfigError: Answer(422, "invalid_config"),
    ExecRefusedError: Answer(400, "unsupported"),
    ReloadUnavailableError: Answer(501, "not_implemented"),
    DaemonStoppingError: Answer(503, "stopping"),
    AcquireError: Answer(503, "offline", retryable=True),
    EnvironmentOfflineError: Answer(503, "offline", retryable=True),
    PoolOverloadedError: Answer(503, "overloaded", retryable=True),
    EnvironmentOutageError: Answer(503, "outage", retryable=True),
    # The sandbox broke under the request: the session is over, acquire a new one.
    SandboxStateError: Answer(503, "sandbox_failed", retryable=True),
    # A feature's setup failed while preparing a session: the environment's config is
    # at fault, not the request; another sandbox may fare better.
    SandboxError: Answer(503, "sandbox_setup_failed", retryable=True),
    FeatureCommandError: Answer(503, "sandbox_setup_failed", retryable=True),
    # File transfers: the request is at fault, and the session goes on.
    UnsupportedError: Answer(400, "unsupported"),
    SandboxFileError: Answer(400, "bad_file_request"),
    UnsafePathError: Answer(400, "unsafe_path"),
    TransferTooLargeError: Answer(413, "body_too_large"),
    SandboxPathNotFoundError: Answer(404, "not_found"),
    # A managed resource (a Deephaven server behind a sandbox, say) failed the request.
    ResourceError: Answer(502, "resource_failed", retryable=True),
    MisconfiguredError: Answer(502, "resource_misconfigured"),
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    502: "bad_gateway",
    503: "unavailable",
}


class ApiError(HTTPException):
    """An answer only HTTP knows about: a malformed request, an unknown endpoint."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(status, message, headers=dict(headers) if headers else None)
        self.code = code
        self.retryable = retryable
        self.extra = dict(extra or {})


def answer_for(exc: SupervisorError) -> Answer | None:
    """The table's row for `exc`: its own class's, else its nearest ancestor's."""
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return None


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retryable: bool = False,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "retryable": retryable, **(extra or {})}}
    return JSONResponse(body, status_code=status, headers=headers)


def to_response(exc: SupervisorError) -> JSONResponse | None:
    """The answer for a domain error, or None if the table has no row for it."""
    found = answer_for(exc)
    if found is None:
        return None
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(exc, AcquireError):
        retry_after = exc.retry_after if exc.retry_after is not None else 5.0
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    if isinstance(exc, ConfigError):
        extra["problems"] = [{"path": p.path, "message": p.message} for p in exc.problems]
    message = str(exc)
    if isinstance(exc, SandboxStateError):
        message = f"{message} (the session has ended: acquire a new one)"
    return error_response(
        found.status, found.code, message, retryable=found.retryable, headers=headers, extra=extra
    )


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SupervisorError)
    response = to_response(exc)
    if response is None:
        return await _internal_error(request, exc)
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ApiError):
        return error_response(
            exc.status_code,
            exc.code,
            exc.detail,
            retryable=exc.retryable,
            headers=exc.headers,
            extra=exc.extra,
        )
    message = exc.detail
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path[:200]}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path[:200]}"
    return error_response(
        exc.status_code,
        _HTTP_CODES.get(exc.status_code, "error"),
        message,
        retryable=exc.status_code == 503,
        headers=exc.headers,
    )


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client hung up mid-request: nobody will read an answer, and it is not our bug.
    log.debug("api_client_disconnected", method=request.method, path=request.url.path[:200])
    return Response(status_code=499)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # The type only: an exception's text can carry a token or a path the client should
    # not see. The log has the traceback (without frame locals).
    log.error(
        "api_internal_error",
        method=request.method,
        path=request.url.path[:200],
        error=type(exc).__name__,
        exc_info=exc,
    )
    return error_response(500, "internal", f"internal error: {type(exc).__name__}", retryable=True)


EXCEPTION_HANDLERS = {
    ClientDisconnect: _client_gone,
    SupervisorError: _domain_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}
