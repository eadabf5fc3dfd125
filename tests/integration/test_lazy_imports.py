"""Heavy libraries load with the kinds that need them, as seen from outside the daemon.

The daemon is a real `supervisor run` under `python -X importtime`: CPython itself then
writes a line to stderr for every module the process imports, at the moment it imports
it, from start-up to exit, worker threads included. That is everything that was ever in
the daemon's `sys.modules`, observed without a line of product code (a debug dump would
be code that only tests call; /proc/PID/maps shows shared libraries only, and the docker
SDK is pure Python). The flag is not in the environment, so no child writes such lines;
the daemon's own log shares its stderr as JSON lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.integration.conftest import free_port, run_cli
from tests.integration.test_docker import IMAGE, docker_cli

# What only some kinds need: the docker SDK (and requests, under it) for docker-using
# kinds; the Deephaven client stack, only ever in helper processes.
DOCKER = frozenset({"docker", "requests"})
DEEPHAVEN = frozenset({"pydeephaven", "grpc", "pyarrow", "deephaven_core", "deephaven_server"})
MCP = frozenset({"mcp", "mcp_types"})  # only with [mcp] http = true
WAIT = 60.0

pytestmark = pytest.mark.slow


class Observed:
    """A daemon's stderr, drained as it comes: the modules it imported and its log."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.modules: set[str] = set()
        self.events: list[dict[str, object]] = []
        self.closed = False
        self._changed = trio.Event()

    @property
    def top_level(self) -> set[str]:
        return {name.split(".")[0] for name in self.modules}

    async def drain(self) -> None:
        """Read stderr to its end (importtime alone fills a pipe before the daemon is up)."""
        assert self.proc.stderr is not None
        pending = b""
        async for chunk in self.proc.stderr:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._take(line.decode(errors="replace"))
            self._wake()
        self.closed = True
        self._wake()

    def _take(self, line: str) -> None:
        if line.startswith("import time:"):
            # "import time: self [us] | cumulative | imported package", then one per module
            self.modules.add(line.rsplit("|", 1)[-1].strip())
        elif line.startswith("{"):
            with contextlib.suppress(ValueError):  # a log line cut by an import line
                self.events.append(json.loads(line))

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def until_log(self, event: str, **fields: object) -> None:
        """Wait (bounded) for a log line `event` with `fields`."""
        with trio.fail_after(WAIT):
            while not any(
                e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
                for e in self.events
            ):
                if self.closed:
                    raise AssertionError(f"the daemon exited before logging {event!r}")
                await self._changed.wait()

    async def stop(self) -> None:
        """SIGTERM, then every line up to the daemon's exit."""
        self.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(WAIT):
            assert await self.proc.wait() == 0
            while not self.closed:
                await self._changed.wait()


@asynccontextmanager
async def observed(tmp_path: Path, config: str) -> AsyncIterator[Observed]:
    """`supervisor run` on `config` under `-X importtime`, its stderr drained throughout."""
    path = tmp_path / "supervisor.toml"
    # Never the machine's default socket or port: tests run beside other daemons.
    private = (
        f'[daemon]\nlog_format = "json"\ncontrol_socket = "{tmp_path}/control.sock"\n'
        f'http = "127.0.0.1:0"\nstate_dir = "{tmp_path}/state"\n'
    )
    path.write_text(private + config)
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-X", "importtime", "-m", "supervisor", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with trio.open_nursery() as nursery:
            daemon = Observed(proc)
            nursery.start_soon(daemon.drain)
            yield daemon
            nursery.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.fail_after(10):
            await proc.wait()


def test_importing_the_launchers_loads_no_heavy_library() -> None:
    """The docker and Deephaven launchers import, in a fresh interpreter, without the SDK
    or the Deephaven client stack: they load on use."""
    code = (
        "import sys, supervisor.launchers.docker, supervisor.launchers.deephaven.launch\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(done.stdout.split())
    assert "supervisor" in loaded
    assert loaded & (DOCKER | DEEPHAVEN) == set()


PROCESSES_ONLY = """
[resources.sleeper]
kind = "process"
command = ["sleep", "1000"]

[environments.scratch]
backend = "process"
min_ready = 1
"""


async def test_a_processes_only_daemon_never_loads_docker_or_deephaven_libraries(
    tmp_path: Path,
) -> None:
    """Processes and process sandboxes, from start to exit: no docker SDK, no Deephaven
    client, gRPC or Arrow in the daemon."""
    async with observed(tmp_path, PROCESSES_ONLY) as daemon:
        await daemon.until_log("daemon_ready")
        env = {**os.environ, "SUPERVISOR_SOCKET": f"{tmp_path}/control.sock"}

        def session() -> str:
            acquired = run_cli("session", "acquire", "scratch", env=env)
            assert acquired.returncode == 0, acquired.stderr
            sid = acquired.stdout.strip()
            ran = run_cli("session", "exec", sid, "--", "sh", "-c", "echo hello", env=env)
            assert run_cli("session", "release", sid, env=env).returncode == 0
            return ran.stdout

        assert await trio.to_thread.run_sync(session) == "hello\n"
        await daemon.stop()
    assert "supervisor.cli" in daemon.modules  # the lines are there, and read
    assert daemon.top_level & (DOCKER | DEEPHAVEN | MCP) == set()


async def test_a_container_resource_loads_the_docker_sdk_and_nothing_more(
    tmp_path: Path,
) -> None:
    """A container resource loads the docker SDK (at its engine's opening), and still no
    Deephaven client library."""
    name = f"lazy-{uuid.uuid4().hex[:12]}"
    config = (
        f'[resources.{name}]\nkind = "container"\nimage = "{IMAGE}"\n'
        'command = ["sleep", "infinity"]\nnetwork = "none"\nstop_timeout = "2s"\n'
    )
    try:
        async with observed(tmp_path, config) as daemon:
            await daemon.until_log("state_changed", resource=name, to="RUNNING")
            await daemon.stop()
    finally:
        leftover = await docker_cli("ps", "-aq", "--filter", f"label=supervisor.resource={name}")
        if leftover:
            await docker_cli("rm", "-f", *leftover.split(), check=False)
    assert not leftover, "the daemon left its container behind"
    assert "docker" in daemon.top_level
    assert daemon.top_level & DEEPHAVEN == set()


async def test_a_deephaven_session_leaves_its_client_library_to_its_helper(
    tmp_path: Path,
) -> None:
    """A Deephaven session runs pydeephaven (and gRPC and Arrow under it) in its helper
    process: the daemon itself loads none of them, nor the docker SDK."""
    config = (
        f'[resources.dh]\nkind = "deephaven"\nhost = "127.0.0.1"\nport = {free_port()}\n'
        "lazy = true\n"  # no server needed: the helper starts, no session opens yet
    )
    async with observed(tmp_path, config) as daemon:
        await daemon.until_log("state_changed", resource="dh", to="RUNNING")
        await daemon.stop()
    assert "supervisor.launchers.deephaven.client" in daemon.modules
    assert daemon.top_level & (DOCKER | DEEPHAVEN) == set()


RESOURCES_ONLY = """
[resources.sleeper]
kind = "process"
command = ["sleep", "1000"]
"""


@pytest.mark.parametrize(
    "module",
    [
        "httpx",  # only an http probe needs an HTTP client (1.7 MiB)
        "tarfile",  # only a sandbox file transfer reads or writes a tar
    ],
)
async def test_a_processes_only_daemon_does_not_import(tmp_path: Path, module: str) -> None:
    """A daemon running processes alone, from start to exit, never imports `module`."""
    async with observed(tmp_path, RESOURCES_ONLY) as daemon:
        await daemon.until_log("state_changed", resource="sleeper", to="RUNNING")
        await daemon.stop()
    assert "supervisor.runtime.daemon" in daemon.modules  # the lines are there, and read
    assert module not in daemon.top_level


async def test_an_http_probe_loads_the_http_client(tmp_path: Path) -> None:
    """The client loads with its first use: a resource with an http probe gets one."""
    port = free_port()
    config = (
        '[resources.web]\nkind = "process"\n'
        f'command = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]\n'
        f'startup = {{ http = "http://127.0.0.1:{port}/", interval = "100ms" }}\n'
    )
    async with observed(tmp_path, config) as daemon:
        await daemon.until_log("state_changed", resource="web", to="RUNNING")
        await daemon.stop()
    assert "httpx" in daemon.top_level
