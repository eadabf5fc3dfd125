"""A container's output, read from its engine's log stream (`docker logs [-f]`).

Why it is built this way:
- The engine keeps the output (json-file, rotated by `max-size`/`max-file`, see
  `containers.log_config`), so the daemon holds nothing per container; a read is one
  request for one stream (stdout or stderr: the engine filters, no demultiplexing here).
- A tail (no follow) is read whole in a worker thread, under the engine's deadline,
  keeping at most `TAIL_LIMIT` bytes however much the engine sends.
- A follow's blocking read runs in a task of the engine's nursery, not in the reader's
  async generator (a generator must not hold a nursery or a cancel scope across its
  yields). The thread hands pieces over a small channel and waits while it is full, so a
  slow client slows the engine's stream, never the loop. The reader leaving cancels that
  task, and the engine closing (the daemon stopping) cancels its nursery; either way
  `read_stream` closes the stream (`CancellableStream.close()`), which ends the blocked
  read at once (tests/integration/test_container_logs.py pins both).
- Each follow holds a thread of the engine's log limiter for as long as it runs; past
  `MAX_FOLLOWS` a new one is refused (retryable) rather than left waiting for a thread.
- The first thing a follow yields is b"": the stream is open, so an unknown container or
  an engine that is down has already raised, before the caller commits to an answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from functools import partial
from typing import Any

import trio

from supervisor.launchers.docker.sdk import DockerError, EngineClient, docker_errors

TAIL_LIMIT = 16 * 1024 * 1024  # the most a tail keeps (the newest bytes)
TAIL_ROUNDS = 4  # a tail asks for N, 8N, 64N, then 512N lines of both streams at most
FOLLOW_BUFFER = 16  # pieces between the reading thread and the reader
MAX_FOLLOWS = 32  # per engine: each holds a worker thread while it runs


class LogReaders:
    """Reads the log streams of one engine's containers."""

    def __init__(self, client: EngineClient, nursery: trio.Nursery) -> None:
        self._client = client
        self._nursery = nursery
        self._limiter = trio.CapacityLimiter(MAX_FOLLOWS)

    @property
    def active(self) -> int:
        """Log streams being read now (each holds a worker thread)."""
        return int(self._limiter.borrowed_tokens)

    async def read(
        self, container_id: str, stream: str, lines: int, follow: bool
    ) -> AsyncGenerator[bytes, None]:
        """The last `lines` lines of `stream`; with `follow`, b"" once the stream is open,
        then every piece the container prints until it ends or the reader leaves.

        Raises:
            DockerError: the container is gone, or the engine failed or did not answer.
        """
        open_logs = partial(
            self._client.api.logs,
            container_id,
            stdout=stream == "stdout",
            stderr=stream == "stderr",
            stream=True,
            follow=follow,
            tail=lines,
        )
        action = f"read the {stream} of container {container_id[:12]}"
        if not follow:
            yield await self._last_lines(open_logs, lines, action)
            return
        if self._limiter.available_tokens < 1:
            raise DockerError(f"{action}: {MAX_FOLLOWS} follows already run; retry later")
        send, receive = trio.open_memory_channel[bytes](FOLLOW_BUFFER)
        failed: list[DockerError] = []
        scope = trio.CancelScope()
        self._nursery.start_soon(self._pump, open_logs, action, send, scope, failed)
        try:
            with receive:
                try:
                    await receive.receive()  # b"": the stream is open
                except trio.EndOfChannel:
                    raise failed[0] if failed else DockerError(f"{action}: closed") from None
                yield b""
                async for piece in receive:
                    yield piece
        finally:
            scope.cancel()

    async def _last_lines(self, open_logs: Callable[..., Any], lines: int, action: str) -> bytes:
        """The last `lines` lines of one stream. The engine counts `tail` over both streams
        before it keeps one, so asking for N lines of stdout after a burst of stderr gives
        fewer: ask again for more (x8, at most TAIL_ROUNDS times) until there are enough."""
        asked = lines
        for _ in range(TAIL_ROUNDS):
            data = await self._tail(partial(open_logs, tail=asked), action)
            if data.count(b"\n") >= lines or len(data) >= TAIL_LIMIT:
                break
            asked *= 8
        return b"".join(data.splitlines(keepends=True)[-lines:]) if lines else b""

    async def _tail(self, open_logs: Callable[[], Any], action: str) -> bytes:
        kept = bytearray()

        def collect(logs: Any) -> None:
            for piece in logs:
                kept.extend(piece)
                if len(kept) > 2 * TAIL_LIMIT:
                    del kept[:-TAIL_LIMIT]

        with docker_errors(action), trio.fail_after(self._client.timeout):
            await self._client.read_stream(open_logs, collect, action, self._limiter)
        return bytes(kept[-TAIL_LIMIT:])

    async def _pump(
        self,
        open_logs: Callable[[], Any],
        action: str,
        send: trio.MemorySendChannel[bytes],
        scope: trio.CancelScope,
        failed: list[DockerError],
    ) -> None:
        def consume(logs: Any) -> None:
            try:
                trio.from_thread.run(send.send, b"")
                for piece in logs:
                    trio.from_thread.run(send.send, piece)
            except trio.BrokenResourceError:
                pass  # the reader left: `read_stream` closes the stream

        with send, scope:
            try:
                await self._client.read_stream(open_logs, consume, action, self._limiter)
            except DockerError as exc:
                failed.append(exc)
