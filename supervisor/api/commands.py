"""Background commands of a session: /v1/sessions/{id}/commands.

`POST /v1/sessions/{id}/exec` with `background: true` starts one and answers 202 with its
handle at once (`sandboxes.py`); these routes list a session's commands, show one with
its output so far, follow its output (NDJSON, the same frames as a streamed exec, from
piece `since`), write to its stdin and signal its process group. They end with the
session at latest; after it, its commands are gone with it (410).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from supervisor.api import models
from supervisor.api.edge import StreamSlots
from supervisor.api.models import reply
from supervisor.api.requests import SignalRequest, StdinRequest, parse_body, query_int
from supervisor.api.spec import NDJSON, ApiRoute, Media, Operation, Param
from supervisor.api.streaming import ResultView, Sink, StreamedExec

_IDS = (
    Param("id", "path", "the session's id"),
    Param("cid", "path", "the command's id (from a background exec)"),
)
LIST = Operation(
    "A session's background commands", {200: models.Commands}, errors=(404, 410),
    params=_IDS[:1],
)  # fmt: skip
SHOW = Operation(
    "A background command and its output so far",
    {200: models.CommandOutput},
    errors=(404, 410),
    params=_IDS,
)
OUTPUT = Operation(
    "Follow a background command's output until it ends",
    {200: Media((NDJSON,), "the frames of a streamed exec, from piece `since`", frames=models.ExecFrame)},
    errors=(400, 404, 410, 503),
    params=(
        *_IDS,
        Param("since", "query", "skip this many pieces", {
            "type": "integer", "minimum": 0, "maximum": 1 << 30,
        }),
    ),
)  # fmt: skip
STDIN = Operation(
    "Write to a background command's stdin (`close` ends it)",
    {204: None},
    errors=(404, 409, 410),
    body=StdinRequest,
    params=_IDS,
)
SIGNAL = Operation(
    "Signal a background command's process group",
    {202: models.Command},
    errors=(404, 409, 410),
    body=SignalRequest,
    params=_IDS,
)


class CommandView(Protocol):
    """One background command (`sandbox.background.Command`)."""

    @property
    def pieces(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def result(self) -> ResultView | None: ...
    @property
    def error(self) -> Exception | None: ...
    def to_json(self) -> dict[str, Any]: ...
    def output(self, stream: str) -> str: ...
    async def changed(self, seen: int) -> None: ...
    def write(self, data: bytes, *, close: bool = ...) -> None: ...
    def signal(self, sig: int) -> None: ...
    @property
    def ended(self) -> bool: ...


class CommandsView(Protocol):
    def get(self, ident: str) -> CommandView: ...
    def all(self) -> Sequence[CommandView]: ...


def command_routes(
    commands: Callable[[str], CommandsView], streams: StreamSlots
) -> list[BaseRoute]:
    """The routes; `commands(session_id)` is the session's (404/410 for a bad session)."""

    def find(request: Request) -> CommandView:
        return commands(request.path_params["id"]).get(request.path_params["cid"])

    async def list_commands(request: Request) -> Response:
        found = commands(request.path_params["id"]).all()
        return reply(models.Commands.model_validate({"commands": [c.to_json() for c in found]}))

    async def show(request: Request) -> Response:
        command = find(request)
        data = {**command.to_json(), "stdout": command.output("stdout")}
        data["stderr"] = command.output("stderr")
        return reply(models.CommandOutput.model_validate(data))

    async def output(request: Request) -> Response:
        command = find(request)
        since = query_int(request, "since", high=1 << 30) or 0

        async def follow(sink: Sink) -> ResultView:
            seen = since
            while True:
                for stream, data in command.pieces[seen:]:
                    sink(stream, data)
                    seen += 1
                if command.ended and seen >= len(command.pieces):
                    break
                await command.changed(seen)
            if command.error is not None:
                raise command.error
            assert command.result is not None
            return command.result

        release = streams.take()
        return StreamedExec(follow, on_close=release)

    async def stdin(request: Request) -> Response:
        body = await parse_body(request, StdinRequest)
        find(request).write(body.data.encode(errors="replace"), close=body.close)
        return Response(status_code=204)

    async def send_signal(request: Request) -> Response:
        body = await parse_body(request, SignalRequest)
        command = find(request)
        command.signal(signal.Signals[f"SIG{body.signal}"])
        return reply(models.Command.model_validate(command.to_json()), 202)

    base = "/v1/sessions/{id}/commands"
    return [
        ApiRoute(base, list_commands, "GET", LIST),
        ApiRoute(base + "/{cid}", show, "GET", SHOW),
        ApiRoute(base + "/{cid}/output", output, "GET", OUTPUT),
        ApiRoute(base + "/{cid}/stdin", stdin, "POST", STDIN),
        ApiRoute(base + "/{cid}/signal", send_signal, "POST", SIGNAL),
    ]
