"""The MCP server's way to the daemon: the synchronous API client, run in worker threads.

One `Client` per call, made and closed in its thread: the client keeps connections and is
not thread-safe, and tool calls arrive concurrently. A connection to the unix socket costs
microseconds, so nothing is pooled. A streamed call (exec) pumps its frames from a thread
into a channel.

A cancelled call (the agent cancelled its tool call, or its MCP session ended) leaves its
thread behind, and what that thread was doing must not outlive the call:
- By default the call's connections are aborted (`Client.abort`, from the event loop):
  the thread wakes at once, and the daemon sees the client leave, which is how the API
  kills a streamed exec's command, quiet or not.
- A call with `undo` (acquire) is not aborted, since an answer may already be on its
  way, with nobody left to release it. It runs to its end, then `undo` is applied to its
  answer (the session is released), so a cancelled acquire does not hold a sandbox
  until its lease.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any, Generic, TypeVar, cast

import structlog
import trio

from supervisor.api.client import Client
from supervisor.errors import DaemonUnavailableError, RequestError

log = structlog.get_logger("supervisor.mcp")

T = TypeVar("T")
Frame = dict[str, Any]
UNDO_TIMEOUT = 10.0


class _Call(Generic[T]):
    """One call's thread and the event loop agreeing on who cleans up after a cancel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: Client | None = None
        self.cancelled = False
        self.answered = False
        self.answer: T | None = None

    def attach(self, client: Client) -> None:
        """The thread's client; aborted at once if the call was cancelled already."""
        with self._lock:
            self._client = client
            cancelled = self.cancelled
        if cancelled:
            client.abort()

    def abort(self) -> None:
        """From the event loop: the call was cancelled; shut its connections."""
        with self._lock:
            self.cancelled = True
            client = self._client
        if client is not None:
            client.abort()

    def deliver(self, answer: T) -> bool:
        """From the thread: keep `answer` for the loop; False if nobody will take it."""
        with self._lock:
            self.answered, self.answer = True, answer
            return not self.cancelled

    def cancel(self) -> bool:
        """From the event loop: the call was cancelled; True if its answer had come
        (the thread handed it over, so undoing it is the loop's job)."""
        with self._lock:
            self.cancelled = True
            return self.answered


class DaemonLink:
    """Runs API client calls off the event loop, each with a fresh client."""

    def __init__(self, connect: Callable[[], Client], *, threads: int = 16) -> None:
        self._connect = connect
        self._limiter = trio.CapacityLimiter(threads)

    async def call(
        self, fn: Callable[[Client], T], *, undo: Callable[[Client, T], object] | None = None
    ) -> T:
        """`fn(client)` in a worker thread; API errors come back as raised. If cancelled,
        its connections are aborted, or with `undo`, `undo(client, answer)` is applied to
        the answer when it comes."""
        call: _Call[T] = _Call()
        try:
            return await trio.to_thread.run_sync(
                partial(self._run, fn, call, undo), limiter=self._limiter, abandon_on_cancel=True
            )
        except trio.Cancelled:
            if undo is None:
                call.abort()
            elif call.cancel():  # answered as we were cancelled: the thread will not undo
                answer = cast(T, call.answer)
                with trio.CancelScope(shield=True), trio.move_on_after(UNDO_TIMEOUT):
                    await trio.to_thread.run_sync(
                        partial(self._run, partial(_undo, undo, answer=answer), _Call(), None),
                        limiter=self._limiter,
                        abandon_on_cancel=True,
                    )
            raise

    def _run(
        self, fn: Callable[[Client], T], call: _Call[T], undo: Callable[[Client, T], object] | None
    ) -> T:
        with self._connect() as client:
            if undo is None:
                call.attach(client)
                return fn(client)
            answer = fn(client)
            if not call.deliver(answer):
                _undo(undo, client, answer=answer)
            return answer

    @asynccontextmanager
    async def stream(
        self, fn: Callable[[Client], Iterator[Frame]], buffer: int = 16
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Frame]]:
        """The frames of `fn(client)` as they come; an API error is a last frame
        `{"error": {"code", "message"}}`. Leaving the block abandons the stream."""
        send, receive = trio.open_memory_channel[Frame](buffer)
        call: _Call[None] = _Call()

        def pump() -> None:
            try:
                with self._connect() as client:
                    call.attach(client)
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
            try:
                with receive:
                    yield receive
            finally:
                call.abort()  # a stream left early ends now, not at its next frame
                nursery.cancel_scope.cancel()


def _undo(undo: Callable[[Client, T], object], client: Client, *, answer: T) -> None:
    try:
        undo(client, answer)
    except (RequestError, DaemonUnavailableError) as exc:
        log.warning("mcp_undo_failed", error=str(exc))


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
