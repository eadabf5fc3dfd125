"""Serve the API on trio: the unix control socket and, if configured, TCP.

We bind the sockets ourselves, so that: a stale socket file is removed but a live
daemon's socket is never stolen; the socket has mode 0660 from the first instant;
`http = "127.0.0.1:0"` works (tests learn the real port); and the socket file is
removed at exit (hypercorn leaves it behind). Each listener then runs under its own
limits (`api.edge`), so a flood on TCP never touches the control socket.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
from starlette.routing import BaseRoute

from supervisor.api.access import Tokens
from supervisor.api.app import Control, build_app
from supervisor.api.edge import Limits, Listener, StreamSlots
from supervisor.config.schema import split_host_port
from supervisor.errors import SupervisorError

# Routes mounted on the TCP listener, made once its stream slots exist (for their streams).
Mounts = Callable[[StreamSlots], Sequence[BaseRoute]]


class ApiBindError(SupervisorError):
    """The control socket or the HTTP port cannot be bound."""


@dataclass
class ApiServer:
    """Where the API listens; filled in once it is bound."""

    socket_path: Path | None = None
    http_address: tuple[str, int] | None = None
    closing: trio.Event = field(default_factory=trio.Event)
    listeners: list[Listener] = field(default_factory=list)

    def close(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), end event streams."""
        self.closing.set()


def bind_unix(path: Path) -> socket.socket:
    """Bind a unix stream socket at `path` with mode 0660, replacing only a stale one."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.stat().st_mode):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # nobody is listening: left behind by a dead daemon
            else:
                raise ApiBindError(
                    f"{path}: another daemon is already listening on this control socket"
                )
            finally:
                probe.close()
        else:
            raise ApiBindError(
                f"{path}: exists and is not a socket; remove it or choose another control_socket"
            )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o117)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ApiBindError(f"{path}: cannot bind the control socket: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o660)
    return sock


def bind_tcp(address: str) -> socket.socket:
    host, port = split_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = " (is another daemon running?)" if exc.errno == errno.EADDRINUSE else ""
        raise ApiBindError(f"{address}: cannot bind the HTTP port: {exc.strerror}{hint}") from None
    return sock


async def serve_api(
    control: Control,
    *,
    socket_path: Path | None,
    http: str | None,
    tokens: Tokens | None = None,
    tls: ssl.SSLContext | None = None,
    limits: Limits | None = None,
    tcp_mounts: Mounts | None = None,
    task_status: trio.TaskStatus[ApiServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `ApiServer.close()`; `started(server)` once every listener is bound.

    TCP needs `tokens` for /v1 (`api.access`) and speaks TLS with `tls`; `tcp_mounts`
    makes routes served on TCP only, behind the full token (the daemon's `/mcp`), given
    the TCP listener's stream slots for their long-lived streams.
    """
    limits = Limits() if limits is None else limits
    server = ApiServer()
    bound: list[tuple[socket.socket, bool]] = []
    try:
        if socket_path is not None:
            bound.append((bind_unix(socket_path), False))
            server.socket_path = socket_path
        if http is not None:
            sock = bind_tcp(http)
            bound.append((sock, True))
            host, port = sock.getsockname()[:2]
            server.http_address = (host, port)
    except BaseException:
        for sock, _ in bound:
            sock.close()
        raise
    try:
        async with trio.open_nursery() as nursery:
            for sock, tcp in bound:
                streams = StreamSlots(limits.streams)
                app = build_app(
                    control,
                    tokens=tokens,
                    tcp=tcp,
                    closing=server.closing,
                    streams=streams,
                    body_idle=limits.header_timeout,
                    mounts=tcp_mounts(streams) if tcp and tcp_mounts is not None else (),
                    secure=tcp and tls is not None,
                )
                listener = Listener(
                    sock, app, limits, "tcp" if tcp else "unix", tls=tls if tcp else None
                )
                server.listeners.append(listener)
                await nursery.start(partial(listener.serve, server.closing))
            task_status.started(server)
    finally:
        for sock, _ in bound:
            sock.close()
        if server.socket_path is not None:  # ours: bound above, so ours to remove
            with contextlib.suppress(FileNotFoundError):
                server.socket_path.unlink()
