"""`GET /v1/resources/{name}/logs?stream=stdout|stderr&lines=N&follow=1`: program output.

The answer is the output itself, as the program wrote it (`text/plain`, bytes unchanged,
no framing): the last `lines` lines, then with `follow` what the program prints next,
until the client leaves, the daemon stops, or the client falls so far behind that it is
cut off (the stream then just ends; `supervisor logs -f` says so). Why it is built so:
- The tail is read before the status line is sent, so an unknown name, a kind that keeps
  no output or an engine that fails answers through the one error table.
- A follow holds a slot of the listener's `StreamSlots` for as long as it runs, and is
  read in a task of its own so a client going away (`http.disconnect`) ends it at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Protocol

import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from supervisor.api.edge import StreamSlots
from supervisor.api.errors import ApiError
from supervisor.api.requests import query_bool, query_int
from supervisor.api.spec import ApiRoute, Media, Operation, Param
from supervisor.api.streaming import until_disconnect
from supervisor.supervision.resource import OutputSource

TEXT = "text/plain; charset=utf-8"
DEFAULT_LINES = 100
MAX_LINES = 100_000
STREAMS = ("stdout", "stderr")

LOGS = Operation(
    "A program's output: its last lines, then (follow) what it prints next",
    {
        200: Media(
            ("text/plain",),
            "the bytes as the program wrote them, unframed; with follow=1 the body continues "
            "until the client leaves, the daemon stops or the client falls too far behind",
        )
    },
    errors=(400, 404, 503),
    params=(
        Param("name", "path", "the resource's name (a key of [resources])"),
        Param("stream", "query", "which stream", {"type": "string", "enum": list(STREAMS)}),
        Param("lines", "query", "how many of the last lines", {
            "type": "integer", "minimum": 0, "maximum": MAX_LINES,
        }),
        Param("follow", "query", "keep the body open for what is printed next", {
            "type": "boolean",
        }),
    ),
    access="read",
)  # fmt: skip


class Outputs(Protocol):
    def output(self, name: str) -> OutputSource:
        """Resource `name`'s output (ResourceNotFoundError, NoOutputError)."""


def log_routes(outputs: Outputs, streams: StreamSlots, closing: trio.Event) -> list[ApiRoute]:
    """The logs route over `outputs`; follows take a slot of `streams`."""

    async def logs(request: Request) -> Response:
        stream = request.query_params.get("stream", "stdout")
        if stream not in STREAMS:
            raise ApiError(400, "bad_request", "stream: expected stdout or stderr")
        lines = query_int(request, "lines", high=MAX_LINES)
        follow = bool(query_bool(request, "follow"))
        source = outputs.output(request.path_params["name"])
        pieces = source.read(stream, DEFAULT_LINES if lines is None else lines, follow)
        release = streams.take() if follow else None
        try:
            tail = await anext(pieces)
        except BaseException:
            await pieces.aclose()
            if release is not None:
                release()
            raise
        if release is None:
            await pieces.aclose()
            return Response(tail, media_type=TEXT, headers={"cache-control": "no-store"})
        return _Followed(tail, pieces, closing, release)

    return [ApiRoute("/v1/resources/{name}/logs", logs, "GET", LOGS)]


class _Followed(Response):
    """The tail, then each piece the program prints, until one side ends."""

    def __init__(
        self,
        tail: bytes,
        pieces: AsyncGenerator[bytes, None],
        closing: trio.Event,
        release: Callable[[], None],
    ) -> None:
        # Not Response.__init__: that would declare the length of a body not yet known.
        self.status_code = 200
        self.background = None
        self.media_type = TEXT
        self.init_headers({"cache-control": "no-store", "x-accel-buffering": "no"})
        self._tail = tail
        self._pieces = pieces
        self._closing = closing
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self._tail, "more_body": True})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(until_disconnect, receive, nursery.cancel_scope)
                nursery.start_soon(_until_set, self._closing, nursery.cancel_scope)
                async for piece in self._pieces:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client is gone
        finally:
            self._release()
            with trio.CancelScope(shield=True):
                await self._pieces.aclose()


async def _until_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
