"""MCP round trips against the real daemon, beside the same through the HTTP API.

One daemon (`supervisor run`) with a `process` environment of 4 warm sandboxes, `[mcp]
http = true` and a token. Timed, one call at a time (an agent's pace, not a load test):

- a no-op tool call: `resources_list` on a daemon with no resources, through
  `supervisor mcp` (stdio) and through `/mcp` (streamable HTTP, an MCP session), beside
  `GET /v1/resources` with the API client over the unix socket and over TCP;
- a sandbox cycle, acquire + exec `true` + release, the same four ways (MCP's exec is the
  streamed one, as agents get it).

The MCP side is the SDK's client under trio; the API side is `supervisor.api.client`
(what the CLI uses), in a thread.
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import trio
from mcp import Client as McpClient
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from bench import apiload
from supervisor.api.client import Client
from supervisor.config.schema import split_host_port

TOKEN = "bench-mcp-token"  # noqa: S105  # a throwaway token for a loopback daemon


def config(workdir: Path, port: int) -> str:
    (workdir / "token").write_text(TOKEN)
    return "\n".join(
        [
            "[daemon]",
            f'control_socket = "{workdir}/control.sock"',
            f'http = "127.0.0.1:{port}"',
            f'api_token_file = "{workdir}/token"',
            f'state_dir = "{workdir}/state"',
            'log_format = "json"',
            "[mcp]",
            "http = true",
            apiload.environment_toml("box", 4),
        ]
    )


def timed_ms(samples: list[float]) -> dict[str, float]:
    return {
        "calls": len(samples),
        "median_ms": statistics.median(samples) * 1000,
        "p99_ms": apiload.percentile(samples, 0.99) * 1000,
    }


async def measure(calls: int, once: Callable[[], Awaitable[None]]) -> dict[str, float]:
    await once()  # warm: connections, imports, the first sandbox's setup
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await once()
        samples.append(time.perf_counter() - started)
    return timed_ms(samples)


async def mcp_side(client: McpClient, calls: int) -> dict[str, Any]:
    async def noop() -> None:
        result = await client.call_tool("resources_list", {})
        assert not result.is_error, result.content

    async def cycle() -> None:
        got = await client.call_tool("sandbox_acquire", {"environment": "box"})
        assert got.structured_content is not None, got.content
        sid = got.structured_content["session_id"]
        ran = await client.call_tool("sandbox_exec", {"session_id": sid, "command": ["true"]})
        assert not ran.is_error, ran.content
        await client.call_tool("sandbox_release", {"session_id": sid})

    return {"noop": await measure(calls, noop), "cycle": await measure(calls, cycle)}


async def api_side(make: Callable[[], Client], calls: int) -> dict[str, Any]:
    client = make()

    def noop() -> None:
        client.resources()

    def cycle() -> None:
        sid = client.acquire("box")["session_id"]
        client.exec(sid, ["true"])
        client.release(sid)

    def sync(fn: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        return lambda: trio.to_thread.run_sync(fn)

    try:
        return {
            "noop": await measure(calls, sync(noop)),
            "cycle": await measure(calls, sync(cycle)),
        }
    finally:
        client.close()


def run(workdir: Path, calls: int) -> dict[str, Any]:
    """Median and p99 of each way, `calls` each."""
    port = free_port()
    text = config(workdir, port)
    with apiload.running(text, workdir) as daemon:
        daemon.wait_ready(0)
        host, port = split_host_port(f"127.0.0.1:{port}")
        sock = workdir / "control.sock"

        async def main() -> dict[str, Any]:
            out: dict[str, Any] = {"calls": calls}
            stdio = StdioServerParameters(
                command=sys.executable,
                args=[
                    "-m",
                    "supervisor",
                    "mcp",
                    "--socket",
                    str(sock),
                    "-c",
                    str(workdir / "daemon.toml"),
                ],
            )
            async with McpClient(stdio, read_timeout_seconds=60) as client:
                out["mcp_stdio"] = await mcp_side(client, calls)
            headers = {"authorization": f"Bearer {TOKEN}"}
            async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
                transport = streamable_http_client(f"http://{host}:{port}/mcp", http_client=http)
                async with McpClient(transport, read_timeout_seconds=60, mode="legacy") as client:
                    out["mcp_http"] = await mcp_side(client, calls)
            out["api_unix"] = await api_side(lambda: Client.connect(socket_path=sock), calls)
            out["api_tcp"] = await api_side(
                lambda: Client.connect(url=f"http://{host}:{port}", token=TOKEN), calls
            )
            return out

        return trio.run(main)


def free_port() -> int:
    """A loopback port nobody listens on now (the daemon binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
