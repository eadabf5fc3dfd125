"""Health and readiness probes for local resources: exec, http and tcp.

A probe runs once and reports a `CheckResult`; the supervisor owns the timing (interval,
timeout, consecutive failures). A probe that cannot even be attempted because its
settings are wrong (a command that does not exist) reports MISCONFIGURED.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import trio

from supervisor.config.schema import split_host_port
from supervisor.errors import StartError
from supervisor.launchers.local import NO_CREDENTIALS, Credentials, LocalLauncher
from supervisor.supervision.resource import CheckResult
from supervisor.supervision.states import Liveness


class ProbeSpec(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def exec(self) -> list[str] | None: ...
    @property
    def http(self) -> str | None: ...
    @property
    def tcp(self) -> str | None: ...
    @property
    def timeout(self) -> float: ...


async def run_probe(
    spec: ProbeSpec,
    launcher: LocalLauncher,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    credentials: Credentials = NO_CREDENTIALS,
) -> CheckResult:
    """Run `spec` once; never raises for a failing target."""
    if spec.exec is not None:
        return await _exec_probe(spec.exec, launcher, cwd, env, credentials)
    if spec.http is not None:
        return await _http_probe(spec.http, spec.timeout)
    assert spec.tcp is not None
    return await _tcp_probe(spec.tcp)


async def _exec_probe(
    argv: list[str],
    launcher: LocalLauncher,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    credentials: Credentials,
) -> CheckResult:
    tail: deque[str] = deque(maxlen=3)
    try:
        handle = await launcher.spawn(
            argv,
            cwd=cwd,
            env=env,
            credentials=credentials,
            on_output=lambda _stream, line: tail.append(line),
        )
    except StartError as exc:
        return CheckResult(Liveness.MISCONFIGURED, f"exec probe: {exc}")
    try:
        term = await handle.wait()
    finally:
        if not handle.exited.is_set():  # cancelled by the check timeout
            handle.kill()
    if term.exit_code == 0:
        return CheckResult(Liveness.ONLINE)
    output = " | ".join(tail)
    return CheckResult(
        Liveness.OFFLINE, f"exec probe {term.detail}" + (f": {output}" if output else "")
    )


async def _http_probe(url: str, timeout: float) -> CheckResult:
    import httpx  # only a daemon with an http probe loads it (and its 1.7 MiB)

    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        return CheckResult(Liveness.OFFLINE, f"http probe: {type(exc).__name__}: {exc}")
    if 200 <= response.status_code < 400:
        return CheckResult(Liveness.ONLINE)
    return CheckResult(Liveness.OFFLINE, f"http probe: status {response.status_code}")


async def _tcp_probe(address: str) -> CheckResult:
    host, port = split_host_port(address)
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        return CheckResult(Liveness.OFFLINE, f"tcp probe: {exc.strerror or exc}")
    await stream.aclose()
    return CheckResult(Liveness.ONLINE)
