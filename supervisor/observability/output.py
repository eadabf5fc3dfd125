"""A program's output: kept in size-rotated files, a small in-memory tail, live followers.

Why it is built this way:
- A child printing as fast as it can must not slow supervision down. The launcher reads
  its pipes in 64 KiB pieces and hands each piece here whole: one `os.write` into the page
  cache, one copy into the tail, one `send_nowait` per follower. No per-line Python work
  (a piece is cut only at a rotation, with one `rfind`), nothing awaited, and each piece
  is one scheduler turn, so a flood gets its fair share of the loop and no more
  (bench/restart_latency.py measures a sibling's restart beside a flood).
- Nothing is held until a program prints: a stream's file is opened on its first piece
  and closed when the child's pipe ends; the tail (at most `TAIL_BYTES` per stream) is
  allocated then too (a fixed ring). A quiet resource costs two small objects and no descriptor.
- Rotation renames `NAME.stdout.log.N` to `.N+1` (metadata only) and opens a new file; a
  piece is cut at its last newline that fits, so lines stay whole unless one alone is
  longer than `max_bytes`.
- A follower that cannot keep up is cut off (its channel closes, the client sees the
  stream end) rather than buffered without bound.
- A file that cannot be written (a full disk, a bad `log_dir`) is reported once and
  skipped until the next start; the tail and followers go on.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import structlog
import trio

from supervisor.config.output import LogConfig

log = structlog.get_logger("supervisor.output")

STREAMS = ("stdout", "stderr")
TAIL_BYTES = 16 * 1024  # per stream (~200 lines), kept in memory once the program printed
FOLLOW_BUFFER = 1024  # pieces queued for one follower before it is cut off
READ_LIMIT = 16 * 1024 * 1024  # the most a `lines=N` request reads back from files
MAX_LINES = 100_000


def last_lines(data: bytes, count: int, *, whole: bool) -> bytes | None:
    """The last `count` lines of `data` (a final unterminated line counts), or None if it
    holds fewer. `whole`: `data` starts at a line's start, so its first line counts."""
    pos = len(data) - 1 if data.endswith(b"\n") else len(data)
    for i in range(count):
        pos = data.rfind(b"\n", 0, pos)
        if pos < 0:
            return data if whole and i == count - 1 else None
    return data[pos + 1 :]


class Ring:
    """The last `capacity` bytes written, in a buffer allocated once."""

    __slots__ = ("_buf", "_filled", "_pos")

    def __init__(self, capacity: int) -> None:
        self._buf = bytearray(capacity)
        self._pos = 0  # where the next byte goes
        self._filled = 0

    def write(self, data: bytes) -> None:
        buf, cap = self._buf, len(self._buf)
        if len(data) >= cap:
            buf[:] = data[-cap:]
            self._pos, self._filled = 0, cap
            return
        first = min(len(data), cap - self._pos)
        buf[self._pos : self._pos + first] = data[:first]
        buf[: len(data) - first] = data[first:]
        self._pos = (self._pos + len(data)) % cap
        self._filled = min(cap, self._filled + len(data))

    def getvalue(self) -> bytes:
        if self._filled < len(self._buf):
            return bytes(self._buf[: self._filled])
        return bytes(self._buf[self._pos :] + self._buf[: self._pos])


class OutputStream:
    """One stream (stdout or stderr) of one resource."""

    __slots__ = ("_broken", "_fd", "_followers", "_settings", "_size", "_tail", "path")

    def __init__(self, path: str, settings: LogConfig) -> None:
        self.path = path
        self._settings = settings
        self._fd = -1
        self._size = 0
        self._broken = False
        self._tail: Ring | None = None
        self._followers: list[trio.MemorySendChannel[bytes]] | None = None

    @property
    def to_file(self) -> bool:
        return self._settings.target == "file"

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    def write(self, data: bytes) -> None:
        """Keep a piece of output; never waits on anything but the page cache."""
        if self.to_file and not self._broken:
            try:
                self._to_file(data)
            except OSError as exc:
                self._broken = True
                self.end()
                log.error("output_file_failed", path=self.path, error=str(exc))
        if self._tail is None:
            self._tail = Ring(TAIL_BYTES)
        self._tail.write(data)
        if self._followers:
            for follower in list(self._followers):
                try:
                    follower.send_nowait(data)
                except (trio.WouldBlock, trio.BrokenResourceError):
                    follower.close()  # too slow, or gone: cut off
                    self._followers.remove(follower)

    def end(self) -> None:
        """The child's pipe ended: give the descriptor back; the next piece reopens it."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def restart(self) -> None:
        """A new child: a file that failed gets another try."""
        self._broken = False

    def _open(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o750, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _to_file(self, data: bytes) -> None:
        if self._fd < 0:
            self._open()
        limit = self._settings.max_bytes
        start, total = 0, len(data)
        while total - start > limit - self._size:
            room = limit - self._size
            cut = data.rfind(b"\n", start, start + max(room, 0)) + 1  # 0: no newline fits
            if cut <= start:
                cut = start if self._size else start + room  # a line longer than a file
            if cut > start:
                self._write_all(data, start, cut)
                start = cut
            self._rotate()
        if start < total:
            self._write_all(data, start, total)

    def _write_all(self, data: bytes, start: int, end: int) -> None:
        view = memoryview(data)[start:end]
        while view:
            written = os.write(self._fd, view)
            self._size += written
            view = view[written:]

    def _rotate(self) -> None:
        self.end()
        name = self.path
        backups = self._settings.backups
        if backups == 0:
            os.unlink(name)
        else:
            for n in range(backups - 1, 0, -1):
                if os.path.exists(f"{name}.{n}"):
                    os.replace(f"{name}.{n}", f"{name}.{n + 1}")
            os.replace(name, f"{name}.1")
        self._open()

    # ------------------------------------------------------------------------ readers

    def snapshot(self) -> tuple[bytes, int]:
        """The tail kept in memory and the current file's size, taken at once."""
        tail = self._tail.getvalue() if self._tail is not None else b""
        return tail, self._size if self._fd >= 0 else -1  # -1: as the file system says

    def files(self) -> list[str]:
        """The current file, then its backups, newest first."""
        return [self.path] + [f"{self.path}.{n}" for n in range(1, self._settings.backups + 1)]

    @contextmanager
    def follow(self) -> Iterator[trio.MemoryReceiveChannel[bytes]]:
        """Every piece written from now on, until the caller leaves or falls behind."""
        send, receive = trio.open_memory_channel[bytes](FOLLOW_BUFFER)
        if self._followers is None:
            self._followers = []
        self._followers.append(send)
        try:
            with receive:
                yield receive
        finally:
            send.close()
            if self._followers is not None and send in self._followers:
                self._followers.remove(send)
            if not self._followers:
                self._followers = None


class OutputLog:
    """A resource's stdout and stderr (`NAME.stdout.log`, `NAME.stderr.log` in `directory`)."""

    __slots__ = ("name", "settings", "stderr", "stdout")

    def __init__(self, name: str, directory: Path, settings: LogConfig) -> None:
        self.name = name
        self.settings = settings
        self.stdout = OutputStream(str(directory / f"{name}.stdout.log"), settings)
        self.stderr = OutputStream(str(directory / f"{name}.stderr.log"), settings)

    def stream(self, name: str) -> OutputStream:
        if name not in STREAMS:
            raise ValueError(f"unknown stream {name!r}")
        return self.stdout if name == "stdout" else self.stderr

    # The launcher's chunk sink: (stream, piece), then end(stream) at end-of-file.
    def write(self, stream: str, data: bytes) -> None:
        self.stream(stream).write(data)

    def end(self, stream: str) -> None:
        self.stream(stream).end()

    def started(self) -> None:
        """A new child starts: files that failed get another try."""
        self.stdout.restart()
        self.stderr.restart()

    def line(self, stream: str, line: str) -> None:
        """Keep one line (for launchers that must read lines anyway: Deephaven servers)."""
        self.stream(stream).write(line.encode("utf-8", "replace") + b"\n")

    async def read(self, stream: str, lines: int, follow: bool) -> AsyncGenerator[bytes, None]:
        """The last `lines` lines of `stream`, then, with `follow`, each piece it prints."""
        out = self.stream(stream)
        with out.follow() if follow else nullcontext() as live:
            # Subscribed before the tail's snapshot, with no checkpoint between: nothing
            # is missed or shown twice.
            yield await self.tail(stream, lines)
            if live is not None:
                async for piece in live:
                    yield piece

    async def tail(self, stream: str, lines: int) -> bytes:
        """The last `lines` lines of `stream` (from memory, else from the files)."""
        out = self.stream(stream)
        memory, size = out.snapshot()
        found = last_lines(memory, lines, whole=False)
        if found is not None or not out.to_file:
            return found if found is not None else memory
        return await trio.to_thread.run_sync(_read_tail, out.files(), size, lines)


def _read_tail(files: list[str], size: int, lines: int) -> bytes:
    """The last `lines` lines across `files` (newest first); the first is read up to `size`
    (what was written when the tail was asked for), unless `size` is -1."""
    kept = b""
    budget = READ_LIMIT
    for index, path in enumerate(files):
        try:
            with open(path, "rb") as f:
                end = f.seek(0, os.SEEK_END)
                if index == 0 and size >= 0:
                    end = min(end, size)
                start = max(0, end - budget)
                f.seek(start)
                kept = f.read(end - start) + kept
        except FileNotFoundError:
            break
        budget -= end - start
        found = last_lines(kept, lines, whole=start == 0)
        if found is not None:
            return found
        if budget <= 0:
            break
    return kept
