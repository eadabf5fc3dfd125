"""The OpenAPI 3.1 document of the API, generated from the routes' `Operation`s.

Schemas come from the pydantic models the routes take (validation mode) and answer
(serialization mode), through `models_json_schema`, with their `$defs` as
`components/schemas`. Besides the statuses a route declares, the document adds the ones
every route of its kind can answer: 401 and 403 on /v1 over TCP (`api.access`), and 400,
408, 413, 415 and 422 for a JSON body (`api.requests`, `api.edge`); every error has the
one error shape. Streams are described as what they are on the wire: a string of
`text/event-stream` or `application/x-ndjson`, with `x-item-schema` (OpenAPI 3.2's
`itemSchema`) for one event's data or one line. Built once per app, on first request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from supervisor import __version__
from supervisor.api import models
from supervisor.api.spec import JSON, ApiRoute, Content, Media, Operation

PATH = "/v1/openapi.json"
REF = "#/components/schemas/{model}"
JSON_BODY_ERRORS = (400, 408, 413, 415, 422)
GUARD_ERRORS = (401, 403)
Mode = Literal["validation", "serialization"]

OPENAPI = Operation(
    "This document (OpenAPI 3.1)",
    {200: Media((JSON,), "the OpenAPI 3.1 document", {"type": "object"})},
    access="read",
)


def _alternatives(answer: Content | tuple[Content, ...]) -> tuple[Content, ...]:
    return answer if isinstance(answer, tuple) else (answer,)


def _described(routes: Sequence[BaseRoute]) -> list[ApiRoute]:
    found: list[ApiRoute] = []
    for route in routes:
        if not isinstance(route, ApiRoute):
            path = getattr(route, "path", route)
            raise TypeError(f"{path}: every route must be an ApiRoute (api.spec) to be described")
        found.append(route)
    return found


def _models(routes: Sequence[ApiRoute]) -> list[tuple[type[BaseModel], Mode]]:
    wanted: dict[tuple[type[BaseModel], Mode], None] = {(models.Error, "serialization"): None}
    for route in routes:
        op = route.operation
        if isinstance(op.body, type):
            wanted[(op.body, "validation")] = None
        for answer in op.answers.values():
            for content in _alternatives(answer):
                if isinstance(content, type):
                    wanted[(content, "serialization")] = None
                elif isinstance(content, Media) and content.frames is not None:
                    wanted[(content.frames, "serialization")] = None
    return list(wanted)


class _Refs:
    def __init__(self, routes: Sequence[ApiRoute]) -> None:
        keyed, top = models_json_schema(_models(routes), ref_template=REF)
        self.keyed = keyed
        self.schemas: dict[str, Any] = top.get("$defs", {})

    def __call__(self, model: type[BaseModel], mode: Mode) -> dict[str, Any]:
        return dict(self.keyed[(model, mode)])


def _content(content: Content, refs: _Refs) -> dict[str, Any]:
    if content is None:
        return {}
    if isinstance(content, Media):
        media: dict[str, Any] = {"schema": dict(content.schema)}
        if content.frames is not None:
            media["x-item-schema"] = refs(content.frames, "serialization")
        return dict.fromkeys(content.types, media)
    return {JSON: {"schema": refs(content, "serialization")}}


def _describe(content: Content) -> str:
    if content is None:
        return "no body"
    if isinstance(content, Media):
        return content.description
    return (content.__doc__ or content.__name__).strip().splitlines()[0]


def _responses(route: ApiRoute, refs: _Refs) -> dict[str, Any]:
    op = route.operation
    answers: dict[str, Any] = {}
    for status, answer in sorted(op.answers.items()):
        alternatives = _alternatives(answer)
        merged: dict[str, Any] = {}
        for content in alternatives:
            merged.update(_content(content, refs))
        entry: dict[str, Any] = {"description": "; or ".join(_describe(c) for c in alternatives)}
        if merged:
            entry["content"] = merged
        answers[str(status)] = entry
    errors = set(op.errors)
    if route.path.startswith("/v1"):
        errors |= set(GUARD_ERRORS)
    if isinstance(op.body, type):
        errors |= set(JSON_BODY_ERRORS)
    elif op.body is not None:
        errors |= {408, 413}
    error = {JSON: {"schema": refs(models.Error, "serialization")}}
    for status in sorted(errors):
        entry = {"description": HTTPStatus(status).phrase, "content": error}
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if status == 503:
            entry["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        answers[str(status)] = entry
    return answers


def _parameters(route: ApiRoute) -> list[dict[str, Any]]:
    declared = {p.name: p for p in route.operation.params}
    found: list[dict[str, Any]] = []
    for name in route.param_convertors:
        param = declared.pop(name, None)
        found.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": param.description if param else name,
                "schema": dict(param.schema) if param else {"type": "string"},
            }
        )
    for param in declared.values():
        if param.where == "path":
            raise ValueError(f"{route.path}: no path parameter {param.name!r}")
        entry: dict[str, Any] = {
            "name": param.name,
            "in": param.where,
            "required": False,
            "description": param.description,
            "schema": dict(param.schema),
        }
        if param.example is not None:
            entry["example"] = param.example
        found.append(entry)
    return found


def _operation(route: ApiRoute, refs: _Refs) -> dict[str, Any]:
    op = route.operation
    entry: dict[str, Any] = {
        "operationId": getattr(route.endpoint, "__name__", route.name),
        "summary": op.summary,
        "x-access": op.access,
        "security": [{"bearer": []}] if route.path.startswith("/v1") else [],
    }
    if op.description:
        entry["description"] = op.description
    if params := _parameters(route):
        entry["parameters"] = params
    if isinstance(op.body, type):
        entry["requestBody"] = {
            "required": False,
            "content": {JSON: {"schema": refs(op.body, "validation")}},
        }
    elif op.body is not None:
        entry["requestBody"] = {
            "required": True,
            "description": op.body.description,
            "content": {kind: {"schema": dict(op.body.schema)} for kind in op.body.types},
        }
    entry["responses"] = _responses(route, refs)
    return entry


def openapi_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The document describing `routes` (TypeError if one is not an `ApiRoute`)."""
    described = _described(routes)
    refs = _Refs(described)
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for route in described:
        entry = _operation(route, refs)
        if entry["operationId"] in seen:
            raise ValueError(f"{route.path}: operationId {entry['operationId']!r} is taken")
        seen.add(entry["operationId"])
        paths.setdefault(route.path, {})[route.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "supervisor-daemon",
            "version": __version__,
            "description": "Over TCP, /v1 needs `Authorization: Bearer TOKEN`: the full "
            "token (daemon.api_token_file) may call everything, the read-only token "
            "(daemon.api_read_token_file) the operations marked `x-access: read`. The "
            "unix control socket needs no token.",
        },
        "paths": paths,
        "components": {
            "schemas": refs.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def openapi_route(routes: Sequence[BaseRoute]) -> ApiRoute:
    """`GET /v1/openapi.json`, describing `routes` and itself; built on first request."""
    built: list[bytes] = []

    async def openapi(request: Request) -> Response:
        if not built:
            built.append(json.dumps(openapi_document([*routes, route])).encode())
        return Response(built[0], media_type=JSON)

    route = ApiRoute(PATH, openapi, "GET", OPENAPI)
    return route
