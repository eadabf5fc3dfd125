"""The OpenAPI document: generated from the routes, complete, and valid OpenAPI 3.1."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from supervisor.api.app import api_routes, build_app
from supervisor.api.edge import StreamSlots
from supervisor.api.openapi import PATH, openapi_document
from supervisor.api.spec import ApiRoute, Operation, Param


class StubSandboxes:
    """Enough of a sandbox service to build its routes (none is called)."""

    def commands(self, session_id: str) -> Any:
        raise AssertionError("not called")


class StubControl:
    sandboxes = StubSandboxes()
    is_ready = True
    is_stopping = False


def every_route() -> list[BaseRoute]:
    return api_routes(StubControl(), closing=trio.Event(), streams=StreamSlots(4))  # type: ignore[arg-type]


def test_every_registered_route_is_in_the_document() -> None:
    """Each route (path and method) the app serves has an operation in the document."""
    routes = every_route()
    paths = openapi_document(routes)["paths"]
    served = {(r.path, m) for r in routes if isinstance(r, Route) for m in r.methods or ()}
    described = {(path, method.upper()) for path, ops in paths.items() for method in ops}
    assert {(p, m) for p, m in served if m != "HEAD"} == described
    assert len(described) >= 25  # the sandbox routes are there too


def test_a_route_without_a_description_refuses_to_build() -> None:
    """A plain Starlette route (no Operation) makes generation fail, naming its path."""

    async def handler(request: Request) -> Response:
        return Response()

    with pytest.raises(TypeError, match="/v1/undescribed"):
        openapi_document([*every_route(), Route("/v1/undescribed", handler)])


def test_a_declared_path_parameter_must_be_in_the_path() -> None:
    """A Param("x", "path") on a route without {x} is a mistake the generator reports."""

    async def handler(request: Request) -> Response:
        return Response()

    op = Operation("x", {204: None}, params=(Param("nope", "path", "absent"),))
    with pytest.raises(ValueError, match="nope"):
        openapi_document([ApiRoute("/v1/thing", handler, "GET", op)])


def test_schemas_come_from_the_models_and_errors_have_the_error_shape() -> None:
    """Bodies and answers reference components; every 4xx/5xx answers the Error shape."""
    doc = openapi_document(every_route())
    schemas = doc["components"]["schemas"]
    exec_op = doc["paths"]["/v1/sessions/{id}/exec"]["post"]
    body = exec_op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ExecRequest"}
    assert set(schemas["ExecRequest"]["properties"]) >= {"command", "script", "timeout"}
    assert schemas["ExecRequest"]["additionalProperties"] is False
    assert set(exec_op["responses"]["200"]["content"]) == {
        "application/json",
        "application/x-ndjson",
    }
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                if int(status) >= 400:
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, method)
    assert schemas["Error"]["required"] == ["error"]


def test_streams_and_files_are_described_as_they_are_on_the_wire() -> None:
    """SSE, NDJSON, octet-stream and tar appear with their media types and frames."""
    paths = openapi_document(every_route())["paths"]
    events = paths["/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    assert events["x-item-schema"] == {"$ref": "#/components/schemas/Event"}
    output = paths["/v1/sessions/{id}/commands/{cid}/output"]["get"]["responses"]["200"]
    assert "application/x-ndjson" in output["content"]
    put = paths["/v1/sessions/{id}/files"]["put"]["requestBody"]["content"]
    assert set(put) == {"application/octet-stream", "application/x-tar"}
    get = paths["/v1/sessions/{id}/files"]["get"]["responses"]["200"]["content"]
    assert set(get) == {"application/octet-stream", "application/x-tar", "application/json"}


def test_v1_needs_the_bearer_token_and_says_who_may_call_it() -> None:
    """/v1 operations carry the bearer security and x-access; health and metrics do not."""
    paths = openapi_document(every_route())["paths"]
    assert paths["/metrics"]["get"]["security"] == []
    assert paths["/v1/resources"]["get"]["security"] == [{"bearer": []}]
    assert paths["/v1/resources"]["get"]["x-access"] == "read"
    assert paths["/v1/resources/{name}/credentials"]["get"]["x-access"] == "full"
    assert "401" in paths["/v1/reload"]["post"]["responses"]


async def test_the_route_serves_the_document_built_once() -> None:
    """GET /v1/openapi.json answers the document; a second request gets the same bytes."""
    app = build_app(StubControl())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
        first = await client.get(PATH)
        second = await client.get(PATH)
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.json()["openapi"] == "3.1.0"
    assert PATH in first.json()["paths"]
    assert first.content == second.content
