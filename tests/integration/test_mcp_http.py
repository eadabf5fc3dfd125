"""MCP over streamable HTTP at the daemon's `/mcp`: the real SDK client, a real daemon,
behind the bearer token and the Origin check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import httpx2
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from prometheus_client import CollectorRegistry

from supervisor.config.load import load_text
from supervisor.runtime.daemon import Daemon
from tests.integration.test_mcp_stdio import active, call
from tests.integration.test_sandbox_api import env_config, until

pytestmark = [
    pytest.mark.slow,
    # The SDK's HTTP client (httpx2, httpx-sse) leaves its GET stream's async generators to
    # the garbage collector when a session closes under trio; that is the test's client,
    # not the daemon, whose leaks the tests below check by what the daemon still holds.
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <async_generator object "
        r"(EventSource|PoolByteStream|Response)\.:pytest.PytestUnraisableExceptionWarning"
    ),
]

TOKEN = "mcp-test-token"
READ_TOKEN = "mcp-read-only-token"


@asynccontextmanager
async def http_daemon(
    tmp_path: Path, mcp: str = "", lease: str = "600s", streams: int = 128
) -> AsyncIterator[tuple[Daemon, str]]:
    """A daemon with a token on TCP and `[mcp] http = true` (then the `mcp` lines), and
    `streams` long-lived streams per listener; yields it and the `/mcp` URL."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    (tmp_path / "read-token").write_text(READ_TOKEN + "\n")
    text = (
        f'[daemon]\ncontrol_socket = "{tmp_path}/control.sock"\nhttp = "127.0.0.1:0"\n'
        f'state_dir = "{tmp_path}/state"\napi_token_file = "{token_file}"\n'
        f'api_read_token_file = "{tmp_path}/read-token"\n'
        f"[daemon.limits]\nstreams = {streams}\n"
        + env_config(lease=lease)
        + ("[mcp]\nhttp = true\n" + mcp if "http =" not in mcp else "[mcp]\n" + mcp)
    )
    daemon = Daemon(load_text(text), registry=CollectorRegistry())
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        assert daemon.api is not None
        assert daemon.api.http_address is not None
        host, port = daemon.api.http_address
        try:
            yield daemon, f"http://{host}:{port}/mcp"
        finally:
            daemon.request_stop()


@asynccontextmanager
async def http_agent(
    url: str, *, terminate: bool = True, mode: str = "auto"
) -> AsyncIterator[Client]:
    """An MCP client over streamable HTTP with the bearer token; mode "legacy" makes the
    initialize handshake, which opens an MCP session (an Mcp-Session-Id)."""
    async with httpx2.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        transport = streamable_http_client(url, http_client=http, terminate_on_close=terminate)
        async with Client(transport, read_timeout_seconds=30, mode=mode) as client:
            yield client


async def test_an_agent_runs_a_file_over_http_and_releases(tmp_path: Path) -> None:
    """Acquire, write, exec, read back and release, all through /mcp."""
    async with http_daemon(tmp_path) as (daemon, url), http_agent(url) as client:
        sid = (await call(client, "sandbox_acquire", environment="box"))["session_id"]
        await call(client, "sandbox_write_file", session_id=sid, path="a.sh", content="echo hi")
        ran = await call(client, "sandbox_exec", session_id=sid, script="sh a.sh > o; cat o")
        assert (ran["exit_code"], ran["stdout"]) == (0, "hi\n")
        read = await call(client, "sandbox_read_file", session_id=sid, path="o")
        assert read["content"] == "hi\n"
        await call(client, "sandbox_release", session_id=sid)
        assert active(daemon) == 0


async def test_deleting_the_mcp_session_releases_what_it_held(tmp_path: Path) -> None:
    """DELETE of the Mcp-Session-Id (the client closing) releases its sandbox sessions."""
    async with http_daemon(tmp_path) as (daemon, url):
        async with http_agent(url, mode="legacy") as client:
            held = await call(client, "sandbox_acquire", environment="box")
            assert held["kept_alive"] is True
            assert active(daemon) == 1
        await until(daemon, lambda: active(daemon) == 0, timeout=15)


async def test_an_idle_mcp_session_releases_what_it_held(tmp_path: Path) -> None:
    """A client that vanishes without DELETE is released after http_idle_timeout."""
    async with http_daemon(tmp_path, 'http_idle_timeout = "1s"\n') as (daemon, url):
        async with http_agent(url, terminate=False, mode="legacy") as client:
            await call(client, "sandbox_acquire", environment="box")
            assert active(daemon) == 1
        await until(daemon, lambda: active(daemon) == 0, timeout=15)


async def test_without_an_mcp_session_the_lease_alone_keeps_a_sandbox(tmp_path: Path) -> None:
    """A sessionless (2026-07-28) client's sandbox ends at its lease unless heartbeated."""
    async with http_daemon(tmp_path, lease="2s") as (daemon, url), http_agent(url) as client:
        kept = await call(client, "sandbox_acquire", environment="box")
        assert kept["kept_alive"] is False
        assert kept["lease_expires_at"] is not None
        await call(client, "sandbox_heartbeat", session_id=kept["session_id"])
        await until(daemon, lambda: active(daemon) == 0, timeout=15)


async def test_mcp_needs_the_token_and_a_known_origin(tmp_path: Path) -> None:
    """No token: 401; the read-only token or a foreign Origin: 403; a listed or the
    daemon's own origin passes."""
    origins = 'allowed_origins = ["http://agents.example"]\n'
    async with http_daemon(tmp_path, origins) as (_, url):
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.post(url, json=body, headers=headers)).status_code == 401
            reader = {**headers, "authorization": f"Bearer {READ_TOKEN}"}
            assert (await http.post(url, json=body, headers=reader)).status_code == 403
            headers["authorization"] = f"Bearer {TOKEN}"
            foreign = await http.post(
                url, json=body, headers={**headers, "origin": "http://evil.example"}
            )
            assert foreign.status_code == 403
            assert "allowed_origins" in foreign.json()["error"]["message"]
            host = url.split("/")[2]
            for origin in ("http://agents.example", f"http://{host}"):
                passed = await http.post(url, json=body, headers={**headers, "origin": origin})
                assert passed.status_code not in (401, 403), origin
        async with http_agent(url) as client:
            assert (await call(client, "sandbox_environments"))["environments"]
        async with http_agent(url, mode="legacy") as client:
            assert (await call(client, "sandbox_environments"))["environments"]


async def test_mcp_over_http_can_be_switched_off(tmp_path: Path) -> None:
    """With [mcp] http = false (the default) there is no /mcp route."""
    async with (
        http_daemon(tmp_path, "http = false\n") as (_, url),
        httpx.AsyncClient(timeout=10) as http,
    ):
        answer = await http.post(url, json={}, headers={"authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 404


async def test_an_mcp_get_stream_takes_a_slot_of_the_listeners_stream_cap(
    tmp_path: Path,
) -> None:
    """The GET stream of an MCP session holds a stream slot, as /v1/events does: past the
    cap both are 503 too_many_streams, tool calls (POST) still pass, and the slot comes
    back when the stream ends."""
    async with (
        http_daemon(tmp_path, streams=2) as (_, url),
        httpx.AsyncClient(timeout=10, headers={"authorization": f"Bearer {TOKEN}"}) as http,
    ):
        events = url.replace("/mcp", "/v1/events")
        accept = {"accept": "application/json, text/event-stream"}
        hello = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "cap-test", "version": "1"},
            },
        }
        started = await http.post(url, json=hello, headers=accept)
        assert started.status_code == 200, started.text
        session = {
            **accept,
            "mcp-session-id": started.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-06-18",
        }
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await http.post(url, json=done, headers=session)).status_code == 202
        listen = {**session, "accept": "text/event-stream"}
        async with (
            http.stream("GET", url, headers=listen) as mcp_stream,
            http.stream("GET", events) as event_stream,
        ):
            assert (mcp_stream.status_code, event_stream.status_code) == (200, 200)
            for refused in (
                await http.get(url, headers=listen),
                await http.get(events, params={"since": 0, "follow": 1}),
            ):
                assert refused.status_code == 503
                assert refused.json()["error"]["code"] == "too_many_streams"
                assert refused.headers["retry-after"]
            async with http_agent(url) as client:  # POSTs take no slot
                assert (await call(client, "sandbox_environments"))["environments"]
            await mcp_stream.aclose()
            # The daemon sees the close a moment later; each try is a round trip (bounded).
            with trio.fail_after(10):
                while True:
                    async with http.stream("GET", events) as again:
                        if again.status_code == 200:
                            break
