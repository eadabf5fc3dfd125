"""The streamed exec response, driven through ASGI with a fake exec."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import trio
from starlette.requests import Request

from supervisor.api import models
from supervisor.api.streaming import Frames, Sink, StreamedExec, error_frame, wants_stream
from supervisor.errors import SandboxStateError, SessionNotFoundError
from supervisor.sandbox.instance import ExecResult


class Client:
    """The ASGI side of one request: what was sent, and a disconnect to trigger."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = trio.Event()
        self.first_body = trio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body":
            self.first_body.set()

    def frames(self) -> list[dict[str, Any]]:
        body = b"".join(m["body"] for m in self.sent if m["type"] == "http.response.body")
        return [json.loads(line) for line in body.splitlines()]


def released() -> tuple[list[bool], Any]:
    flag: list[bool] = []
    return flag, lambda: flag.append(True)


async def serve(response: StreamedExec, client: Client) -> None:
    await response({"type": "http"}, client.receive, client.send)


def test_a_split_character_is_decoded_whole() -> None:
    """A UTF-8 character cut between two reads becomes one character, not two U+FFFD."""
    send, receive = trio.open_memory_channel[bytes](math.inf)
    frames = Frames(send)
    frames("stdout", b"caf\xc3")
    frames("stdout", b"\xa9 \xff")
    frames.flush()
    got = [json.loads(receive.receive_nowait()) for _ in range(2)]
    assert got == [
        {"stream": "stdout", "data": "caf"},
        {"stream": "stdout", "data": "é \ufffd"},
    ]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/x-ndjson", True),
        ("application/json, application/x-ndjson;q=0.9", True),
        ("Application/X-NDJSON", True),
        ("application/json", False),
        ("", False),
    ],
)
def test_the_stream_is_asked_for_with_accept(accept: str, expected: bool) -> None:
    """Only `Accept: application/x-ndjson` streams; the buffered form is the default."""
    scope = {"type": "http", "headers": [(b"accept", accept.encode())] if accept else []}
    assert wants_stream(Request(scope)) is expected


async def test_frames_then_a_final_frame_without_the_output() -> None:
    """Output frames come first, then the result's exit code, duration and flags."""

    async def run(sink: Sink) -> ExecResult:
        sink("stdout", b"out\n")
        sink("stderr", b"err\n")
        return ExecResult(3, "", "", 0.5, truncated=True)

    client, (flag, release) = Client(), released()
    await serve(StreamedExec(run, release), client)
    assert client.sent[0]["status"] == 200
    assert client.frames() == [
        {"stream": "stdout", "data": "out\n"},
        {"stream": "stderr", "data": "err\n"},
        {"exit_code": 3, "duration_s": 0.5, "timed_out": False, "truncated": True},
    ]
    assert client.sent[-1]["more_body"] is False
    assert flag == [True]


async def test_output_left_in_the_result_is_sent_as_frames() -> None:
    """A backend that cannot stream (deephaven) still gets its output to the client."""

    async def run(sink: Sink) -> ExecResult:
        return ExecResult(0, "printed\n", "", 0.1)

    client, (_, release) = Client(), released()
    await serve(StreamedExec(run, release), client)
    assert client.frames()[0] == {"stream": "stdout", "data": "printed\n"}


async def test_an_error_before_any_output_is_raised_for_the_error_table() -> None:
    """Nothing is sent yet: the error goes to the exception handlers (a 404, say)."""

    async def run(sink: Sink) -> ExecResult:
        raise SessionNotFoundError("no session 'x'")

    client, (flag, release) = Client(), released()
    with pytest.raises(SessionNotFoundError):
        await serve(StreamedExec(run, release), client)
    assert client.sent == []
    assert flag == [True]


async def test_an_error_after_output_is_the_last_frame() -> None:
    """The sandbox broke mid-run: the stream ends with the error table's answer."""

    async def run(sink: Sink) -> ExecResult:
        sink("stdout", b"partial")
        raise SandboxStateError("the container died")

    client, (_, release) = Client(), released()
    await serve(StreamedExec(run, release), client)
    frames = client.frames()
    assert frames[0] == {"stream": "stdout", "data": "partial"}
    assert frames[-1]["error"]["code"] == "sandbox_failed"
    assert "the container died" in frames[-1]["error"]["message"]


async def test_a_disconnect_cancels_the_exec() -> None:
    """The client going away cancels the running exec and gives the slot back."""
    cancelled = trio.Event()

    async def run(sink: Sink) -> ExecResult:
        sink("stdout", b"started\n")
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    client, (flag, release) = Client(), released()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, StreamedExec(run, release), client)
        await client.first_body.wait()
        client.gone.set()
    assert cancelled.is_set()
    assert flag == [True]
    assert client.frames() == [{"stream": "stdout", "data": "started\n"}]


def test_an_unmapped_error_frame_has_the_documented_error_shape() -> None:
    """An internal error's last frame carries `retryable` too, as the Error model says."""
    found = error_frame(RuntimeError("boom"))
    assert models.ExecFrame.model_validate(found).root == models.Error.model_validate(found)
    assert found["error"]["retryable"] is True
