"""journald's stream protocol, against a unix socket standing in for journald's."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio

from supervisor.errors import StartError
from supervisor.launchers.journald import journal_streams


async def test_each_stream_opens_with_the_documented_header_then_carries_the_bytes(
    tmp_path: Path,
) -> None:
    """stdout's connection says (identifier, no unit, priority 6, no prefix, no forwarding),
    stderr's the same at priority 3; what is written after the header is the output."""
    path = str(tmp_path / "stdout")
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(2)
    with listener, trio.fail_after(10):
        out, err = await journal_streams("web", path)
        for fd, priority in ((out, 6), (err, 3)):
            assert os.get_blocking(fd)  # a child writes to it as to a pipe
            os.write(fd, b"hello\n")
            os.close(fd)
            conn, _ = await listener.accept()
            with conn:
                received = b""
                while chunk := await conn.recv(4096):
                    received += chunk
            assert received == f"web\n\n{priority}\n0\n0\n0\n0\nhello\n".encode()


async def test_no_journald_is_a_start_error_that_names_the_socket(tmp_path: Path) -> None:
    """Without journald's socket the start fails (and is retried), saying where it looked."""
    with pytest.raises(StartError, match=r"cannot connect to .*/missing"):
        await journal_streams("web", str(tmp_path / "missing"))
