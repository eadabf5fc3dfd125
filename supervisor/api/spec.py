"""How a route is described: its request, its answers, its errors and who may call it,
declared once, beside the handler.

Every route of the API is an `ApiRoute`: a Starlette route carrying an `Operation`. The
OpenAPI document (`api.openapi`) is generated from the operations, and the access guard
(`api.access`) reads `access` from them, so a new route is one `ApiRoute(...)` and
nothing else; a route that is not an `ApiRoute` makes the document refuse to build (a
unit test builds it with every route registered).

`access` is "read" for what the read-only token may call (status, events, the API
description) and "full" for everything else, the default: a route nobody thought about
is closed to the read-only token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Access = Literal["read", "full"]
JSON = "application/json"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
OCTETS = "application/octet-stream"
TAR = "application/x-tar"


@dataclass(frozen=True, slots=True)
class Media:
    """A body that is not one JSON model: raw bytes, a tar, or a stream of frames."""

    types: tuple[str, ...]
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    # What each line (NDJSON) or each event's data (SSE) holds.
    frames: type[BaseModel] | None = None


Content = type[BaseModel] | Media | None  # None: no body (204)


@dataclass(frozen=True, slots=True)
class Param:
    """A path, query or header parameter."""

    name: str
    where: Literal["path", "query", "header"]
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    example: Any = None


@dataclass(frozen=True, slots=True)
class Operation:
    """One route's contract: what it takes, what it answers, who may call it.

    `answers` maps a success status to its body, or to alternatives (chosen by `Accept`
    or by a query parameter); `errors` lists the statuses of the error shape that this
    route can answer besides the ones every route of its kind can (`api.openapi`).
    """

    summary: str
    answers: Mapping[int, Content | tuple[Content, ...]]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | Media | None = None
    params: tuple[Param, ...] = ()
    access: Access = "full"
    description: str = ""


Endpoint = Callable[[Request], Awaitable[Response]]


class ApiRoute(Route):
    """A route with its `Operation`: one method, one handler, one description."""

    def __init__(self, path: str, endpoint: Endpoint, method: str, operation: Operation) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method
        self.operation = operation
