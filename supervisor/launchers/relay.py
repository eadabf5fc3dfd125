"""Children's output, read from their pipes: handed on in pieces, and/or cut into lines.

Pieces (`ChunkSink`) are what programs' output files take: no per-line work. Lines
(`LineSink`) are for the few readers that need them (the daemon's own log when
`log_output` is set, a Deephaven server's start-up line).

One task reads every child's pipes, as one reaper awaits every child's exit: the read
ends sit in one epoll set whose descriptor the task awaits, so a child's output costs two
kernel registrations and a small record, not a nursery, two tasks and two streams (about
10 KB a child at 1,000 children). Each ready pipe gets one read per turn of the loop; a
read that fills `READ_SIZE` (a child printing flat out) takes that pipe out of the set
for `FLOOD_PAUSE`, so a flood gets its share of the loop and no more
(bench/restart_latency.py measures a sibling's restart beside a flood).
"""

from __future__ import annotations

import math
import os
import select
from collections import deque
from collections.abc import Callable
from typing import Protocol

import structlog
import trio

log = structlog.get_logger("supervisor.launcher")

MAX_LINE = 8192
READ_SIZE = 65536  # a pipe's whole default capacity: one read drains it
# After a read that filled READ_SIZE, the pipe rests this long before the next: a flood
# then takes a turn of the loop once a millisecond, capping it at 64 MB/s per stream (the
# child waits on its full pipe).
FLOOD_PAUSE = 0.001

LineSink = Callable[[str, str], None]  # (stream name, line)


class ChunkSink(Protocol):
    """Takes a child's output as read, in pieces (`observability.output.OutputLog`)."""

    def write(self, stream: str, data: bytes) -> None: ...
    def end(self, stream: str) -> None: ...


class _Pipe:
    """One read end: where its pieces and lines go, and the line cut in progress."""

    __slots__ = ("chunks", "done", "fd", "name", "pending", "sink", "skipping")

    def __init__(
        self,
        fd: int,
        name: str,
        sink: LineSink | None,
        chunks: ChunkSink | None,
        done: _Countdown,
    ) -> None:
        self.fd = fd
        self.name = name
        self.sink = sink
        self.chunks = chunks
        self.done = done
        self.pending = b""
        self.skipping = False

    def take(self, chunk: bytes) -> None:
        """Hand a piece on as it is; forward its complete lines, cutting long ones."""
        if self.chunks is not None:
            _hand(self.chunks, self.name, chunk)
        sink = self.sink
        if sink is None:
            return
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            if self.skipping:
                self.skipping = False
                continue
            _emit(sink, self.name, line[:MAX_LINE], truncated=len(line) > MAX_LINE)
        if len(self.pending) > MAX_LINE:
            if not self.skipping:
                _emit(sink, self.name, self.pending[:MAX_LINE], truncated=True)
                self.skipping = True
            self.pending = b""

    def finish(self, *, flush: bool) -> None:
        """The pipe is closed: end the piece stream; `flush` forwards a last partial line."""
        try:
            if self.chunks is not None:
                self.chunks.end(self.name)
            pending = self.pending
            if flush and self.sink is not None and pending and not self.skipping:
                _emit(self.sink, self.name, pending[:MAX_LINE], truncated=len(pending) > MAX_LINE)
        finally:
            self.done.tick()


class _Countdown:
    """Calls `done` once both of a child's pipes are finished."""

    __slots__ = ("_done", "_left")

    def __init__(self, left: int, done: Callable[[], None]) -> None:
        self._left = left
        self._done = done

    def tick(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._done()


class PipeReader:
    """Reads the pipes of every relayed child in one task, started with the first."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._poll: select.epoll | None = None
        self._pipes: dict[int, _Pipe] = {}

    def relay(
        self,
        out_fd: int,
        err_fd: int,
        sink: LineSink | None,
        chunks: ChunkSink | None,
        done: Callable[[], None],
    ) -> None:
        """Read both pipes (and close them at end-of-file); `done` once both ended."""
        if self._poll is None:
            self._poll = select.epoll()
            self._nursery.start_soon(self._read_all, self._poll)
        countdown = _Countdown(2, done)
        for fd, name in ((out_fd, "stdout"), (err_fd, "stderr")):
            os.set_blocking(fd, False)
            self._pipes[fd] = _Pipe(fd, name, sink, chunks, countdown)
            self._poll.register(fd, select.EPOLLIN)

    async def _read_all(self, poll: select.epoll) -> None:
        """One read per ready pipe per turn, until cancelled with the launcher."""
        resting: deque[tuple[float, int]] = deque()  # (back at, fd), in time order
        try:
            while True:
                with trio.move_on_at(resting[0][0] if resting else math.inf):
                    await trio.lowlevel.wait_readable(poll.fileno())
                now = trio.current_time()
                while resting and resting[0][0] <= now:
                    _, fd = resting.popleft()
                    if fd in self._pipes:
                        poll.modify(fd, select.EPOLLIN)
                for fd, _ in poll.poll(0):
                    if self._read(poll, fd):
                        resting.append((now + FLOOD_PAUSE, fd))
        finally:
            trio.lowlevel.notify_closing(poll.fileno())
            pipes, self._pipes = self._pipes, {}
            for pipe in pipes.values():
                os.close(pipe.fd)
                pipe.finish(flush=False)
            poll.close()
            self._poll = None

    def _read(self, poll: select.epoll, fd: int) -> bool:
        """Read once from `fd`; True if the read filled READ_SIZE (the pipe must rest)."""
        pipe = self._pipes[fd]
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            poll.unregister(fd)
            os.close(fd)
            del self._pipes[fd]
            pipe.finish(flush=True)
            return False
        pipe.take(chunk)
        if len(chunk) == READ_SIZE:
            poll.modify(fd, 0)
            return True
        return False


def _hand(chunks: ChunkSink, name: str, data: bytes) -> None:
    try:
        chunks.write(name, data)
    except Exception:
        log.exception("output_sink_failed")


def _emit(sink: LineSink, name: str, line: bytes, *, truncated: bool = False) -> None:
    text = line.rstrip(b"\r").decode("utf-8", errors="replace")
    try:
        sink(name, text + (" [truncated]" if truncated else ""))
    except Exception:
        log.exception("output_sink_failed")
