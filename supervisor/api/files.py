"""File transfers: `PUT` and `GET /v1/sessions/{id}/files?path=REL` (and `&list=1`).

An upload's body is one file (`application/octet-stream`, written as `path`) or a tar
(`application/x-tar`, extracted under the directory `path`). The edge caps it at the
session's environment's `file_limit` (`body_limit`), declared or streamed, and it is
spooled (in memory up to `SPOOL_MEMORY`, then a temporary file) before the sandbox sees
it, so a slow client holds no work open in the sandbox. A download answers a file's
bytes, or a tar of a directory, streamed from a spool; over the limit, 413 before any.
Which paths are allowed is `sandbox.files`' and the backends' business.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import IO, Any, Protocol

import trio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute
from starlette.types import Scope

from supervisor.api import models
from supervisor.api.errors import ApiError
from supervisor.api.models import reply
from supervisor.api.requests import query_bool
from supervisor.api.spec import OCTETS, TAR, ApiRoute, Media, Operation, Param

SPOOL_MEMORY = 1 << 20
CHUNK = 1 << 16
MEDIA = {OCTETS: False, TAR: True}
_FILES_PATH = re.compile(r"^/v1/sessions/([^/]+)/files$")


class Download(Protocol):
    @property
    def is_dir(self) -> bool: ...
    @property
    def size(self) -> int: ...
    @property
    def data(self) -> IO[bytes]: ...


class Listing(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class FileSandboxes(Protocol):
    """What the file routes need from the daemon's sandbox service."""

    def file_limit(self, session_id: str) -> int | None: ...
    async def put_files(
        self, session_id: str, path: str, data: IO[bytes], *, tar: bool
    ) -> None: ...
    async def get_files(self, session_id: str, path: str) -> Download: ...
    async def list_files(self, session_id: str, path: str) -> Listing: ...


def body_limit(sandboxes: FileSandboxes | None, default: int) -> Callable[[Scope], int]:
    """The edge's body limit: a file upload's is its environment's `file_limit`."""

    def limit_for(scope: Scope) -> int:
        if sandboxes is None or scope.get("method") != "PUT":
            return default
        found = _FILES_PATH.match(scope.get("path", ""))
        if found is None:
            return default
        return sandboxes.file_limit(found.group(1)) or default

    return limit_for


async def _spool(request: Request) -> IO[bytes]:
    """The body in a spooled temporary file, rewound (the edge has capped its size)."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 - returned
    pending = bytearray()
    try:
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= SPOOL_MEMORY:  # past memory, writes may block: a thread
                await trio.to_thread.run_sync(spool.write, bytes(pending))
                pending.clear()
        await trio.to_thread.run_sync(spool.write, bytes(pending))
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


async def _stream(data: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await trio.to_thread.run_sync(data.read, CHUNK):
            yield chunk
    finally:
        data.close()


_BINARY = {"type": "string", "contentMediaType": OCTETS}
_SESSION = Param("id", "path", "the session's id")
_PATH = Param("path", "query", "relative to the sandbox's work directory (default: .)")
PUT_FILES = Operation(
    "Upload a file, or a tar extracted under the directory `path`",
    {204: None},
    errors=(400, 404, 410, 413, 415),
    body=Media((OCTETS, TAR), "one file's bytes, or a tar of a directory", _BINARY),
    params=(_SESSION, _PATH),
)
GET_FILES = Operation(
    "Download a file (its bytes) or a directory (a tar); with list=1, list it",
    {
        200: (
            Media((OCTETS,), "a file's bytes", _BINARY),
            Media((TAR,), "a directory as a tar", _BINARY),
            models.FileListing,
        )
    },
    errors=(400, 404, 410, 413),
    params=(_SESSION, _PATH, Param("list", "query", "list the directory", {"type": "boolean"})),
)


def file_routes(sandboxes: FileSandboxes) -> list[BaseRoute]:
    """The routes, bound to `sandboxes`."""

    async def put_files(request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in MEDIA:
            raise ApiError(
                415,
                "unsupported_media_type",
                "send a file as application/octet-stream or a directory as "
                f"application/x-tar (got {kind[:64] or 'none'})",
            )
        path = request.query_params.get("path", ".")
        data = await _spool(request)
        try:
            await sandboxes.put_files(request.path_params["id"], path, data, tar=MEDIA[kind])
        finally:
            data.close()
        return Response(status_code=204)

    async def get_files(request: Request) -> Response:
        session_id = request.path_params["id"]
        path = request.query_params.get("path", ".")
        if query_bool(request, "list"):
            listing = await sandboxes.list_files(session_id, path)
            return reply(models.FileListing.model_validate(listing.to_json()))
        found = await sandboxes.get_files(session_id, path)
        media = "application/x-tar" if found.is_dir else "application/octet-stream"
        return StreamingResponse(
            _stream(found.data),
            media_type=media,
            headers={"content-length": str(found.size)},
            background=BackgroundTask(found.data.close),  # also when the stream never ran
        )

    return [
        ApiRoute("/v1/sessions/{id}/files", put_files, "PUT", PUT_FILES),
        ApiRoute("/v1/sessions/{id}/files", get_files, "GET", GET_FILES),
    ]
