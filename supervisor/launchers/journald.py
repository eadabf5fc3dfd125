"""A child's stdout and stderr connected straight to journald (`log = { target = "journald" }`).

Each stream is a connection to journald's stream socket, opened with the documented
header (identifier, unit id, priority, level prefix, forward to syslog, kmsg, console;
one per line), then handed to the child as its descriptor: the daemon touches none of
the bytes, and journald stamps and keeps each line under the resource's name as
`SYSLOG_IDENTIFIER` (`journalctl -t NAME`), stdout at priority 6 (info), stderr at 3 (err).
"""

from __future__ import annotations

import os
import socket

import trio

from supervisor.errors import StartError

STREAM_SOCKET = "/run/systemd/journal/stdout"
PRIORITIES = (6, 3)  # stdout: info, stderr: err


async def journal_streams(identifier: str, path: str = STREAM_SOCKET) -> tuple[int, int]:
    """Two descriptors (stdout, stderr) connected to journald, for a child to inherit.

    Raises:
        StartError: journald is not there (no systemd, or its socket is out of reach).
    """
    fds: list[int] = []
    try:
        for priority in PRIORITIES:
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                await sock.connect(path)
                header = f"{identifier}\n\n{priority}\n0\n0\n0\n0\n".encode()
                while header:
                    header = header[await sock.send(header) :]
                sock.shutdown(socket.SHUT_RD)  # journald never writes back
            except BaseException:
                sock.close()
                raise
            fd = sock.detach()
            fds.append(fd)
            os.set_blocking(fd, True)  # the child writes as to any pipe: waiting when full
    except OSError as exc:
        for fd in fds:
            socket.close(fd)
        raise StartError(f'log target "journald": cannot connect to {path}: {exc}') from None
    except BaseException:
        for fd in fds:
            socket.close(fd)
        raise
    return fds[0], fds[1]
