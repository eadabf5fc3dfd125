"""Load on the daemon's HTTP API: a daemon with sandbox environments, and a light client.

The client speaks just enough HTTP/1.1 over the unix socket for trio (one request at a
time per connection, Content-Length bodies), so that 64 concurrent clients cost one
thread and little CPU on a 2-CPU machine: `supervisor.api.client.Client` is synchronous
and would need 64 threads fighting over the GIL, which would time the bench, not the
daemon. Like that client, an acquire opens a connection of its own (the daemon may hold
it up to the acquire's wait) and every other call reuses a kept-alive one.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from bench import sut

CRLF2 = b"\r\n\r\n"


def environment_toml(name: str, size: int, *, proactive: bool = True) -> str:
    """`[environments.NAME]`: `size` warm process sandboxes (min_ready = max_size), no
    features; keepalives and housekeeping at their shipped defaults. Not isolated: these
    benchmarks time the pool and the API (up to 10,000 sandboxes, which as isolated ones
    would be 10,000 agents); `sandbox_isolation` times isolation."""
    return "\n".join(
        [
            f"[environments.{name}]",
            'backend = "process"',
            'isolation = "none"',
            f"min_ready = {size}",
            f"max_size = {size}",
            f"proactive_session_setup = {'true' if proactive else 'false'}",
            'acquire_timeout = "60s"',
            f"shutdown_concurrency = {max(16, min(size, 256))}",
        ]
    )


def launch(text: str, workdir: Path) -> sut.Sut:
    """Start `supervisor run` on the config `text` (written to `workdir/daemon.toml`)."""
    config = workdir / "daemon.toml"
    config.write_text(text)
    log = workdir / "daemon.log"
    argv = [sys.executable, "-m", "supervisor", "run", "-c", str(config)]
    with log.open("wb") as out:
        started = time.monotonic()
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=sut._term_with_bench,  # noqa: PLW1509 (the bench has one thread)
        )
    return sut.Sut("daemon", popen, log, started)


@contextlib.contextmanager
def running(text: str, workdir: Path) -> Iterator[sut.Sut]:
    """`launch()` ... `sut.stop()`, stopping even when the benchmark fails half-way."""
    daemon = launch(text, workdir)
    try:
        yield daemon
    finally:
        code = sut.stop(daemon, timeout=120.0)
        if code != 0:
            tail = daemon.log.read_text(errors="replace")[-2000:]
            print(f"warning: the daemon exited with {code} after SIGTERM; its log ends:\n{tail}")


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile: an observed value."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(samples: list[float], *, keep: bool = True) -> dict[str, Any]:
    """Count, median, p99 (and every sample, in ms, when `keep`)."""
    out: dict[str, Any] = {
        "calls": len(samples),
        "median_ms": statistics.median(samples) * 1000,
        "p99_ms": percentile(samples, 0.99) * 1000,
    }
    if keep:
        out["samples_ms"] = [round(x * 1000, 3) for x in samples]
    return out


class Connection:
    """One HTTP/1.1 connection to the daemon's unix socket; one request at a time."""

    def __init__(self, path: Path, stream: trio.SocketStream) -> None:
        self.path = path
        self._stream = stream
        self._buffer = bytearray()

    @classmethod
    async def open(cls, path: Path) -> Connection:
        """Connect, waiting while the listener's backlog is full (as a blocking connect
        would: trio takes EAGAIN from a unix socket for "in progress", then fails)."""
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(str(path))
            except BlockingIOError:
                sock.close()
                await trio.sleep(0.0005)
                continue
            except BaseException:
                sock.close()
                raise
            return cls(path, trio.SocketStream(trio.socket.from_stdlib_socket(sock)))

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def request(
        self, method: str, target: str, body: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        """(status, body) of one request.

        hypercorn closes a kept-alive connection after 1,000 requests; like `Client`,
        reconnect and send again once when the server closed it before answering.
        """
        try:
            return await self._request(method, target, body)
        except (ConnectionError, trio.BrokenResourceError):
            if self._buffer:
                raise
            await self._stream.aclose()
            self._stream = (await Connection.open(self.path))._stream
            return await self._request(method, target, body)

    async def _request(
        self, method: str, target: str, body: dict[str, Any] | None
    ) -> tuple[int, bytes]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {target} HTTP/1.1\r\nhost: localhost\r\n"
        if body is not None:
            head += "content-type: application/json\r\n"
        head += f"content-length: {len(payload)}\r\n\r\n"
        await self._stream.send_all(head.encode() + payload)
        while (end := self._buffer.find(CRLF2)) < 0:
            await self._receive()
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(self._buffer) < length:
            await self._receive()
        content = bytes(self._buffer[:length])
        del self._buffer[:length]
        return status, content

    async def _receive(self) -> None:
        chunk = await self._stream.receive_some(1 << 16)
        if not chunk:
            raise ConnectionError("the daemon closed the connection")
        self._buffer += chunk


async def call(conn: Connection, method: str, target: str, expect: int) -> bytes:
    """A request that must answer `expect`."""
    status, content = await conn.request(method, target, {} if method == "POST" else None)
    if status != expect:
        raise RuntimeError(f"{method} {target}: {status} {content[:300]!r}")
    return content
