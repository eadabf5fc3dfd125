"""The MCP server's way to the daemon: the synchronous API client, run in worker threads.

One `Client` per call, made and closed in its thread: the client keeps connections and is
not thread-safe, and tool calls arrive concurrently. A connection to the unix socket costs
microseconds, so nothing is pooled. A streamed call (exec) pumps its frames from a thread
into a channel; when the reader goes away the pump's next send fails and the generator is
closed, which drops the connection, which is how the API kills the command.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any, TypeVar

import trio

from supervisor.api.client import Client
from supervisor.errors import DaemonUnavailableError, RequestError

T = TypeVar("T")
Frame = dict[str, Any]


class DaemonLink:
    """Runs API client calls off the event loop, each with a fresh client."""

    def __init__(self, connect: Callable[[], Client], *, threads: int = 16) -> None:
        self._connect = connect
        self._limiter = trio.CapacityLimiter(threads)

    async def call(self, fn: Callable[[Client], T]) -> T:
        """`fn(client)` in a worker thread; API errors come back as raised."""
        return await trio.to_thread.run_sync(
            partial(self._run, fn), limiter=self._limiter, abandon_on_cancel=True
        )

    def _run(self, fn: Callable[[Client], T]) -> T:
        with self._connect() as client:
            return fn(client)

    @asynccontextmanager
    async def stream(
        self, fn: Callable[[Client], Iterator[Frame]], buffer: int = 16
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Frame]]:
        """The frames of `fn(client)` as they come; an API error is a last frame
        `{"error": {"code", "message"}}`. Leaving the block abandons the stream."""
        send, receive = trio.open_memory_channel[Frame](buffer)

        def pump() -> None:
            try:
                with self._connect() as client:
                    frames = fn(client)
                    try:
                        for frame in frames:
                            trio.from_thread.run(send.send, frame)
                    finally:
                        close = getattr(frames, "close", None)
                        if close is not None:
                            close()
            except (RequestError, DaemonUnavailableError) as exc:
                _deliver(send, error_frame(exc))
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.RunFinishedError):
                pass  # the reader left: the stream is abandoned on purpose
            finally:
                _close(send)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(
                    trio.to_thread.run_sync, pump, abandon_on_cancel=True, limiter=self._limiter
                )
            )
            with receive:
                yield receive
            nursery.cancel_scope.cancel()  # the thread finishes on its own (next frame)


def error_frame(exc: RequestError | DaemonUnavailableError) -> Frame:
    code = exc.code if isinstance(exc, RequestError) else "daemon_unavailable"
    return {
        "error": {
            "code": code,
            "message": exc.message if isinstance(exc, RequestError) else str(exc),
        }
    }


def _deliver(send: trio.MemorySendChannel[Frame], frame: Frame) -> None:
    with suppress(trio.BrokenResourceError, trio.ClosedResourceError, trio.RunFinishedError):
        trio.from_thread.run(send.send, frame)


def _close(send: trio.MemorySendChannel[Frame]) -> None:
    with suppress(trio.RunFinishedError):
        trio.from_thread.run_sync(send.close)
