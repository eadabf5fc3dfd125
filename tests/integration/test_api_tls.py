"""TLS on the TCP listener and the read-only token, against a real daemon over TCP."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from supervisor.api.client import Client
from supervisor.cli import EXIT_UNAVAILABLE
from supervisor.errors import DaemonUnavailableError
from supervisor.runtime.daemon import Daemon
from supervisor.supervision.states import State
from tests.integration.conftest import run_cli
from tests.integration.test_api import running
from tests.tls import CertPair, self_signed

FULL, READ = "full-token-1", "read-token-2"


def tls_extra(pair: CertPair, header_timeout: str = "10s") -> str:
    return (
        f'tls = {{ cert = "{pair.cert}", key = "{pair.key}" }}\n'
        f'limits = {{ header_timeout = "{header_timeout}" }}\n'
    )


def https(daemon: Daemon, pair: CertPair, token: str | None = FULL) -> httpx.AsyncClient:
    assert daemon.api is not None
    assert daemon.api.http_address is not None
    host, port = daemon.api.http_address
    headers = {"authorization": f"Bearer {token}"} if token else {}
    verify = ssl.create_default_context(cafile=str(pair.cert))
    return httpx.AsyncClient(
        base_url=f"https://{host}:{port}", headers=headers, verify=verify, timeout=10
    )


def url(daemon: Daemon, scheme: str = "https") -> str:
    assert daemon.api is not None
    assert daemon.api.http_address is not None
    host, port = daemon.api.http_address
    return f"{scheme}://{host}:{port}"


def tcp_listener_active(daemon: Daemon) -> int:
    assert daemon.api is not None
    return next(li.active for li in daemon.api.listeners if li.name == "tcp")


async def raw_exchange(daemon: Daemon, data: bytes) -> bytes:
    """Send `data` on a plain TCP connection; everything the daemon answers until it closes."""
    assert daemon.api is not None
    assert daemon.api.http_address is not None
    stream = await trio.open_tcp_stream(*daemon.api.http_address)
    received = b""
    with trio.fail_after(10):
        async with stream:
            if data:
                await stream.send_all(data)
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


async def test_https_with_the_ca_file_reaches_the_daemon(tmp_path: Path) -> None:
    """The TCP listener speaks TLS: httpx, the client and the CLI verify it with --ca-file."""
    pair = self_signed(tmp_path)
    async with running(tmp_path, token=FULL, daemon_extra=tls_extra(pair)) as daemon:
        async with https(daemon, pair) as api:
            assert (await api.get("/healthz")).status_code == 200
            answer = await api.get("/v1/resources")
        assert answer.status_code == 200
        assert {r["name"] for r in answer.json()["resources"]} == {"sleeper", "other"}
        with Client.connect(url=url(daemon), token=FULL, ca_file=pair.cert) as client:
            found = await trio.to_thread.run_sync(client.resources)
        assert len(found) == 2
        (tmp_path / "cli-token").write_text(FULL)
        where = ["--url", url(daemon), "--token-file", str(tmp_path / "cli-token")]
        done = await trio.to_thread.run_sync(
            lambda: run_cli("status", *where, "--ca-file", str(pair.cert))
        )
        assert done.returncode == 0, done.stderr
        assert "sleeper" in done.stdout


async def test_a_certificate_nobody_vouches_for_is_refused_by_the_client(tmp_path: Path) -> None:
    """Without --ca-file, a self-signed daemon is not trusted: exit "unavailable" saying what to give."""
    pair = self_signed(tmp_path)
    async with running(tmp_path, token=FULL, daemon_extra=tls_extra(pair)) as daemon:
        with (
            Client.connect(url=url(daemon), token=FULL) as client,
            pytest.raises(DaemonUnavailableError, match="--ca-file"),
        ):
            await trio.to_thread.run_sync(client.resources)
        done = await trio.to_thread.run_sync(lambda: run_cli("status", "--url", url(daemon)))
        assert done.returncode == EXIT_UNAVAILABLE
        assert "cannot verify" in done.stderr


async def test_plain_http_to_the_tls_listener_gets_a_clean_400(tmp_path: Path) -> None:
    """Plain HTTP on the TLS port is answered in plain text (use https://) and closed."""
    pair = self_signed(tmp_path)
    async with running(tmp_path, token=FULL, daemon_extra=tls_extra(pair)) as daemon:
        answer = await raw_exchange(daemon, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b'"tls_required"' in answer
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert tcp_listener_active(daemon) == 0
        async with https(daemon, pair) as api:
            assert (await api.get("/healthz")).status_code == 200


async def test_a_failed_handshake_is_a_quiet_close_that_frees_its_slot(tmp_path: Path) -> None:
    """A ClientHello-looking record of garbage: closed without an answer, the slot freed."""
    pair = self_signed(tmp_path)
    async with running(tmp_path, token=FULL, daemon_extra=tls_extra(pair)) as daemon:
        for _ in range(3):
            assert await raw_exchange(daemon, b"\x16\x03\x01\x00\x05garbage-garbage") == b""
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert tcp_listener_active(daemon) == 0
        async with https(daemon, pair) as api:
            assert (await api.get("/v1/resources")).status_code == 200


async def test_a_stalled_handshake_is_cut_off_at_the_head_deadline(tmp_path: Path) -> None:
    """A client that connects and never says hello is closed at header_timeout."""
    pair = self_signed(tmp_path)
    extra = tls_extra(pair, header_timeout="500ms")
    async with running(tmp_path, token=FULL, daemon_extra=extra) as daemon:
        started = trio.current_time()
        assert await raw_exchange(daemon, b"") == b""
        assert 0.4 <= trio.current_time() - started < 8
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert tcp_listener_active(daemon) == 0


async def test_the_read_token_reads_status_events_and_the_description(tmp_path: Path) -> None:
    """Read-only: resources, events, openapi and metrics 200; every verb and credentials 403."""
    pair = self_signed(tmp_path)
    (tmp_path / "read-token").write_text(READ + "\n")
    extra = tls_extra(pair) + f'api_read_token_file = "{tmp_path}/read-token"\n'
    async with running(tmp_path, token=FULL, daemon_extra=extra) as daemon:
        async with https(daemon, pair, token=READ) as api:
            assert (await api.get("/v1/resources")).status_code == 200
            assert (await api.get("/v1/resources/sleeper")).status_code == 200
            assert (await api.get("/v1/openapi.json")).json()["openapi"] == "3.1.0"
            assert (await api.get("/metrics")).status_code == 200
            async with api.stream("GET", "/v1/events", params={"since": 0}) as events:
                assert events.status_code == 200
                assert events.headers["content-type"].startswith("text/event-stream")
            for method, path in [
                ("POST", "/v1/resources/sleeper/stop"),
                ("POST", "/v1/reload"),
                ("GET", "/v1/resources/sleeper/credentials"),
            ]:
                refused = await api.request(method, path)
                assert refused.status_code == 403, (method, path)
                assert refused.json()["error"]["code"] == "forbidden"
                assert "read-only token" in refused.json()["error"]["message"]
        assert daemon.supervisors["sleeper"].state is State.RUNNING
        async with https(daemon, pair, token=FULL) as api:
            stopped = await api.post("/v1/resources/sleeper/stop")
            assert stopped.status_code == 202
        async with https(daemon, pair, token="not-a-token") as api:
            assert (await api.get("/v1/resources")).status_code == 401
