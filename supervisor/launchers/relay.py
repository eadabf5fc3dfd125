"""A child's output, read from its pipes: handed on in pieces, and/or cut into lines.

Pieces (`ChunkSink`) are what programs' output files take: no per-line work. Lines
(`LineSink`) are for the few readers that need them (the daemon's own log when
`log_output` is set, a Deephaven server's start-up line).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import structlog
import trio

log = structlog.get_logger("supervisor.launcher")

MAX_LINE = 8192
READ_SIZE = 65536  # a pipe's whole default capacity: one read drains it
# After a read that filled READ_SIZE (a child printing flat out), wait this long before
# the next: a flood then takes a turn of the loop once a millisecond instead of in every
# scheduler batch, capping it at 64 MB/s per stream (the child waits on its full pipe).
FLOOD_PAUSE = 0.001

LineSink = Callable[[str, str], None]  # (stream name, line)


class ChunkSink(Protocol):
    """Takes a child's output as read, in pieces (`observability.output.OutputLog`)."""

    def write(self, stream: str, data: bytes) -> None: ...
    def end(self, stream: str) -> None: ...


async def relay_both(
    done: trio.Event,
    out_fd: int,
    err_fd: int,
    sink: LineSink | None,
    chunks: ChunkSink | None,
) -> None:
    try:
        async with trio.open_nursery() as nursery:
            for fd, name in ((out_fd, "stdout"), (err_fd, "stderr")):
                nursery.start_soon(_relay, trio.lowlevel.FdStream(fd), name, sink, chunks)
    finally:
        done.set()


async def _relay(
    stream: trio.lowlevel.FdStream, name: str, sink: LineSink | None, chunks: ChunkSink | None
) -> None:
    """Hand each piece read to `chunks` as it is; forward complete lines to `sink`, cutting
    lines longer than MAX_LINE. Each read is one scheduler turn: a flood cannot hog it."""
    pending = b""
    skipping = False
    try:
        async with stream:
            while True:
                try:
                    chunk = await stream.receive_some(READ_SIZE)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    chunk = b""
                if not chunk:
                    break
                if chunks is not None:
                    _hand(chunks, name, chunk)
                if len(chunk) == READ_SIZE:
                    await trio.sleep(FLOOD_PAUSE)
                if sink is None:
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if skipping:
                        skipping = False
                        continue
                    _emit(sink, name, line[:MAX_LINE], truncated=len(line) > MAX_LINE)
                if len(pending) > MAX_LINE:
                    if not skipping:
                        _emit(sink, name, pending[:MAX_LINE], truncated=True)
                        skipping = True
                    pending = b""
    finally:
        if chunks is not None:
            chunks.end(name)
    if sink is not None and pending and not skipping:
        _emit(sink, name, pending[:MAX_LINE], truncated=len(pending) > MAX_LINE)


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
