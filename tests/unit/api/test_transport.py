"""The client's wire: every way of getting no whole answer is one error."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.api.transport import Transport
from supervisor.errors import DaemonUnavailableError


@pytest.fixture
def garbled(tmp_path: Path) -> Iterator[Path]:
    """A unix socket whose server answers every connection with a malformed status line."""
    path = tmp_path / "garbled.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed: the test is over
            with conn:
                conn.recv(65536)
                conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(10)


def test_a_malformed_answer_is_daemon_unavailable_for_a_call_and_a_stream(garbled: Path) -> None:
    transport = Transport.connect(socket_path=garbled, timeout=10)
    with pytest.raises(DaemonUnavailableError, match="broke off its answer"):
        transport.request("GET", "/healthz")
    conn = transport.stream_connection()
    try:
        with pytest.raises(DaemonUnavailableError, match="broke off its answer"):
            transport.open_stream(conn, "/v1/events")
    finally:
        conn.close()


def test_no_daemon_is_daemon_unavailable(tmp_path: Path) -> None:
    transport = Transport.connect(socket_path=tmp_path / "none.sock", timeout=10)
    with pytest.raises(DaemonUnavailableError, match="cannot reach the daemon"):
        transport.request("GET", "/healthz")
