"""A streamed exec: `POST /v1/sessions/{id}/exec` with `Accept: application/x-ndjson`.

The answer is one JSON object per line: `{"stream": "stdout"|"stderr", "data": text}` as
the command's output arrives, then one final line, the result without its output
(`{"exit_code", "duration_s", "timed_out", "truncated"}`), or `{"error": {...}}` if the
sandbox broke under the command. Why it is built this way:
- The status line and headers wait for the first frame (or the end): an exec refused
  before it starts (an unknown or ended session, an option the sandbox cannot honour)
  is answered as the buffered form would be, with its own status, through the one error
  table; only what goes wrong after the first byte becomes an error frame.
- Output is decoded per stream with an incremental UTF-8 decoder (`errors="replace"`),
  so a character split across two reads is not mangled.
- The backend hands over output synchronously, into an unbounded queue: the output cap
  bounds it (past the cap nothing more is sent; the final frame says `truncated`).
- A client that goes away (`http.disconnect`) cancels the exec, which kills the
  command's process group, as its timeout would. The stream holds a slot of the
  listener's `StreamSlots` for as long as it runs.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from supervisor.api.errors import to_response
from supervisor.errors import SupervisorError

NDJSON = "application/x-ndjson"

Sink = Callable[[str, bytes], None]


class ResultView(Protocol):
    """What an exec returns (`sandbox.instance.ExecResult`)."""

    def to_json(self) -> dict[str, Any]: ...


def wants_stream(request: Request) -> bool:
    """Whether the client asked for NDJSON (`Accept: application/x-ndjson`)."""
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == NDJSON for part in accept.split(","))


def frame(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class Frames:
    """Turns output pieces into frames, decoding each stream incrementally."""

    def __init__(self, send: trio.MemorySendChannel[bytes]) -> None:
        self._send = send
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")(errors="replace")
            for name in ("stdout", "stderr")
        }

    def __call__(self, name: str, data: bytes) -> None:
        self._emit(name, self._decoders[name].decode(data))

    def flush(self) -> None:
        for name, decoder in self._decoders.items():
            self._emit(name, decoder.decode(b"", final=True))

    def _emit(self, name: str, text: str) -> None:
        if text:
            self._send.send_nowait(frame({"stream": name, "data": text}))


def final_frame(result: ResultView) -> dict[str, Any]:
    """The result without its output (the frames carried it)."""
    data = result.to_json()
    return {key: data[key] for key in ("exit_code", "duration_s", "timed_out", "truncated")}


def error_frame(exc: Exception) -> dict[str, Any]:
    """`{"error": {...}}` as the error table answers `exc` (500 "internal" if unmapped)."""
    response = to_response(exc) if isinstance(exc, SupervisorError) else None
    if response is None:
        name = type(exc).__name__
        return {
            "error": {"code": "internal", "message": f"internal error: {name}", "retryable": True}
        }
    body: dict[str, Any] = json.loads(bytes(response.body))
    return body


class StreamedExec(Response):
    """The response of a streamed exec; `run(sink)` runs it, handing output to `sink`."""

    media_type = NDJSON

    def __init__(
        self, run: Callable[[Sink], Awaitable[ResultView]], on_close: Callable[[], None]
    ) -> None:
        # Not Response.__init__: that would declare the length of an empty body.
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})
        self._run = run
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._serve(receive, send)
        finally:
            self._on_close()

    async def _serve(self, receive: Receive, send: Send) -> None:
        sender, frames_in = trio.open_memory_channel[bytes](math.inf)
        frames = Frames(sender)
        outcome: list[ResultView | Exception] = []
        started = False
        refused: Exception | None = None

        async def run() -> None:
            with sender:
                try:
                    result = await self._run(frames)
                except Exception as exc:
                    outcome.append(exc)
                else:
                    outcome.append(result)
                    # A backend that cannot stream (deephaven) leaves the output here.
                    data = result.to_json()
                    for name in ("stdout", "stderr"):
                        if data.get(name):
                            frames(name, str(data[name]).encode())
                frames.flush()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_disconnect, receive, nursery.cancel_scope)
            nursery.start_soon(run)
            async with frames_in:
                async for data in frames_in:
                    if not started:
                        await self._start(send)
                        started = True
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                found = outcome[0]
                if isinstance(found, Exception) and not started:
                    refused = found
                else:
                    if not started:
                        await self._start(send)
                    last = (
                        error_frame(found) if isinstance(found, Exception) else final_frame(found)
                    )
                    end = {"type": "http.response.body", "body": frame(last), "more_body": False}
                    await send(end)
                nursery.cancel_scope.cancel()  # done: stop watching for a disconnect
        if refused is not None:
            raise refused  # answered by the error table, as the buffered form is

    async def _start(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})


async def until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    """Cancel `scope` when the client goes away."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
