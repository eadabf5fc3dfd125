"""Sandbox pool: in-process session cycles per second vs langfun, and warm acquire over HTTP.

*Cycles*: `clients` tasks (ours) or threads (langfun) loop over one session cycle on a
pool of 4 warm sandboxes for a fixed window; cycles/s is all cycles over the window.
One cycle, on both sides: acquire a sandbox, start a session (one feature's
`setup_session`, which only counts), one in-memory activity that fires an activity event
(ours: `session.exec` on an in-memory instance; langfun: `TestingSandbox.shell`), end the
session (the feature's `teardown_session`, which only counts), give the sandbox back.
With proactive setup on, the next session's `setup_session` runs after the release,
off the client's path (ours: a task; langfun: a new thread per release). Ours runs on
an in-memory backend, so only the pool machinery is timed, and again on the real
`process` backend, where the activity is a heartbeat (an exec there would spawn a
process; cycles touch the backend nowhere else). langfun runs in its own venv
(`.bench-venvs/langfun`), driven by `langfun_driver.py`.

*Warm acquire*: the real daemon with a `process` environment of 64 warm sandboxes;
1, 16 and 64 concurrent clients each loop acquire (a fresh connection, as
`Client.acquire` opens) then release (a kept-alive connection), each call timed.

*Isolation* (`sandbox_isolation.py`): what `isolation = "bubblewrap"` costs per exec,
per sandbox and per cycle, against `"none"` and a bare spawn.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import trio

from bench import apiload, peers, sandbox_isolation, sut
from supervisor.config.environment import EnvironmentConfig, ProcessLimits
from supervisor.errors import UnsupportedError
from supervisor.launchers.local import open_local_launcher
from supervisor.sandbox.backends import Backend, ExecResult
from supervisor.sandbox.backends.process import ProcessBackend
from supervisor.sandbox.environment import Environment, open_environment
from supervisor.sandbox.features import Feature
from supervisor.sandbox.files import Download, Listing
from supervisor.sandbox.instance import PLAIN, ExecOptions
from supervisor.sandbox.sandbox import Sandbox
from supervisor.sandbox.session import Session

POOL = 4
DRIVER = Path(__file__).with_name("langfun_driver.py")
LANGFUN = peers.VENVS / "langfun"
# The pins. `--pre` (which langfun's dev builds need) also lets pip pick httpx's
# 1.0 pre-releases, which break httpx-sse (mcp imports it, langfun imports mcp): hold
# httpx to its last release line.
LANGFUN_PINS = [
    "langfun==0.1.2.dev202512150805",
    "pyglove==0.5.0.dev202512150813",
    "mcp<1.24",
    "httpx<1",
]
HTTP_POOL = 64


def ensure_langfun() -> Path:
    """The langfun venv's python, created and pip-installed first if needed."""
    marker = LANGFUN / ".bench-pins"
    wanted = "\n".join(LANGFUN_PINS) + "\n"
    python = LANGFUN / "bin" / "python"
    if marker.exists() and marker.read_text() == wanted:
        return python
    print(f"installing langfun ({' '.join(LANGFUN_PINS)}) into {LANGFUN} ...", file=sys.stderr)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(LANGFUN)],
        [str(python), "-m", "pip", "install", "--quiet", "--pre", *LANGFUN_PINS],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"cannot install langfun: {shlex.join(argv)} exited {done.returncode}:\n"
                f"{done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
    marker.write_text(wanted)
    return python


# -- ours, in process --------------------------------------------------------------------


class MemoryInstance:
    """A sandbox in memory: an exec only counts."""

    def __init__(self) -> None:
        self.calls = 0

    async def exec(
        self, argv: Sequence[str], *, timeout: float, options: ExecOptions = PLAIN
    ) -> ExecResult:
        self.calls += 1
        # A real backend's exec is I/O, so it yields to the scheduler; without this
        # checkpoint a cycle never would (acquire and release do not), and the lease
        # watcher each session starts would never get to run and end.
        await trio.lowlevel.checkpoint()
        return ExecResult(0, "", "", 0.0)

    async def run_script(
        self, script: str, *, timeout: float, options: ExecOptions = PLAIN
    ) -> ExecResult:
        return await self.exec(["sh", "-c", script], timeout=timeout, options=options)

    async def put(self, source: Path, dest: str) -> None:
        self.calls += 1

    async def upload(self, dest: str, data: IO[bytes], *, tar: bool, limit: int) -> None:
        raise UnsupportedError("memory sandboxes hold no files")

    async def download(self, path: str, limit: int) -> Download:
        raise UnsupportedError("memory sandboxes hold no files")

    async def listdir(self, path: str) -> Listing:
        raise UnsupportedError("memory sandboxes hold no files")

    async def check(self) -> None:
        return None

    async def wait_dead(self) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def stop(self) -> None:
        return None

    def connection(self) -> dict[str, Any]:
        return {}


class MemoryBackend:
    """Sandboxes that cost nothing to create, so that a cycle times only the pool."""

    name = "memory"

    async def create(self, sandbox_id: str) -> MemoryInstance:
        return MemoryInstance()

    async def reset(self) -> None:
        return None


class Counting(Feature):
    """A feature whose session hooks only count (langfun_driver.Counting's twin)."""

    name = "counting"

    def __init__(self) -> None:
        self.session_hooks = 0

    async def setup_session(self, sandbox: Sandbox, session: Session | None) -> None:
        self.session_hooks += 1

    async def teardown_session(self, sandbox: Sandbox, session: Session) -> None:
        self.session_hooks += 1


async def _cycles(env: Environment, clients: int, seconds: float, exec_: bool) -> tuple[int, float]:
    """(cycles done, seconds taken) by `clients` tasks looping for `seconds`."""
    done = [0] * clients
    deadline = time.perf_counter() + seconds

    async def client(i: int) -> None:
        while time.perf_counter() < deadline:
            async with env.session() as session:
                if exec_:
                    await session.exec(["true"])
                else:
                    session.heartbeat()
                    await trio.lowlevel.checkpoint()  # as the memory exec does
            done[i] += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(client, i)
    return sum(done), time.perf_counter() - started


def settings(proactive: bool) -> EnvironmentConfig:
    return EnvironmentConfig(
        min_ready=POOL, max_size=POOL, proactive_session_setup=proactive, acquire_timeout=60.0
    )


def ours(
    backend: str, clients: int, proactive: bool, window: float, warmup: float
) -> dict[str, Any]:
    """Cycles/s of `open_environment` on the memory or the process backend."""

    async def main() -> tuple[int, float]:
        with tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp:
            async with open_local_launcher() as launcher:
                chosen: Backend = (
                    MemoryBackend()
                    if backend == "memory"
                    else ProcessBackend(launcher, Path(tmp), ProcessLimits(), 1 << 20)
                )
                async with open_environment(
                    "bench", settings(proactive), chosen, [Counting()]
                ) as env:
                    exec_ = backend == "memory"
                    await _cycles(env, clients, warmup, exec_)
                    return await _cycles(env, clients, window, exec_)

    count, took = trio.run(main)
    return {"cycles": count, "seconds": took, "per_s": count / took}


def langfun(
    python: Path, configs: Sequence[tuple[int, bool]], window: float, warmup: float
) -> list[dict[str, Any]]:
    """Cycles/s of langfun's TestingEnvironment per (clients, proactive), measured by
    one run of its venv's interpreter (importing langfun takes seconds)."""
    argv = [str(python), str(DRIVER), str(window), str(warmup)]
    argv += [f"{clients}:{int(proactive)}" for clients, proactive in configs]
    limit = len(configs) * (window + warmup + 30) + 60
    # One retry: langfun's own start_session can fail under concurrent clients (seen
    # once in a full run: `time.time() - None` in base_sandbox.start_session), which
    # says nothing about its speed; a second failure is reported.
    for attempt in (1, 2):
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=limit)
        if done.returncode == 0:
            break
        print(f"  langfun driver failed (attempt {attempt}): {done.stderr[-300:]}", flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"langfun driver failed ({done.returncode}): {done.stderr[-3000:]}")
    results: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def cycles(
    python: Path, client_counts: Sequence[int], window: float, warmup: float
) -> dict[str, Any]:
    """Every system x proactive on/off x client count."""
    configs = [(clients, proactive) for clients in client_counts for proactive in (True, False)]
    theirs = langfun(python, configs, window, warmup)
    runs = [
        {
            "clients": clients,
            "proactive": proactive,
            "memory": ours("memory", clients, proactive, window, warmup),
            "process": ours("process", clients, proactive, window, warmup),
            "langfun": langfun_result,
        }
        for (clients, proactive), langfun_result in zip(configs, theirs, strict=True)
    ]
    return {"pool": POOL, "window_s": window, "runs": runs}


# -- warm acquire over HTTP -------------------------------------------------------------


async def _acquire_load(
    socket: Path, clients: int, per_client: int, fresh: bool
) -> tuple[list[float], list[float]]:
    """Each client: one untimed cycle, then `per_client` timed acquire + release; an
    acquire opens a connection of its own when `fresh` (as `Client.acquire` does)."""
    acquires: list[float] = []
    releases: list[float] = []
    target = "/v1/environments/box/sessions"

    async def client() -> None:
        keep = await apiload.Connection.open(socket)
        try:
            for i in range(per_client + 1):
                started = time.perf_counter()
                if fresh:
                    conn = await apiload.Connection.open(socket)
                    try:
                        raw = await apiload.call(conn, "POST", target, 201)
                    finally:
                        await conn.aclose()
                else:
                    raw = await apiload.call(keep, "POST", target, 201)
                acquired = time.perf_counter()
                session = json.loads(raw)["session_id"]
                await apiload.call(keep, "DELETE", f"/v1/sessions/{session}", 204)
                if i:  # the first cycle warms the connection and the daemon's caches
                    acquires.append(acquired - started)
                    releases.append(time.perf_counter() - acquired)
        finally:
            await keep.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)
    return acquires, releases


MODES = {"fresh": True, "kept-alive": False}


def http_acquire(workdir: Path, client_counts: Sequence[int], calls: int) -> dict[str, Any]:
    """p50/p99 of acquire and release per number of concurrent clients and per mode:
    `fresh` (a connection per acquire, as `Client.acquire`) and `kept-alive`."""
    text = sut.daemon_toml([], workdir) + apiload.environment_toml("box", HTTP_POOL) + "\n"
    results: dict[str, Any] = {"pool": HTTP_POOL, "calls": calls}
    with apiload.running(text, workdir) as daemon:
        results["ready_s"] = daemon.wait_ready(0, timeout=120)
        for mode, fresh in MODES.items():
            for clients in client_counts:
                per_client = max(1, calls // clients)
                started = time.perf_counter()
                acquires, releases = trio.run(
                    _acquire_load, workdir / "control.sock", clients, per_client, fresh
                )
                took = time.perf_counter() - started
                results[f"{mode} {clients}"] = {
                    "mode": mode,
                    "clients": clients,
                    "cycles_per_s": len(acquires) / took,
                    "acquire": apiload.summary(acquires),
                    "release": apiload.summary(releases, keep=False),
                }
    return results


def run(
    workdir: Path,
    *,
    client_counts: Sequence[int],
    window: float,
    warmup: float,
    http_clients: Sequence[int],
    http_calls: int,
    isolation_samples: int,
) -> dict[str, Any]:
    python = ensure_langfun()
    return {
        "cycles": cycles(python, client_counts, window, warmup),
        "http_acquire": http_acquire(workdir, http_clients, http_calls),
        "isolation": sandbox_isolation.run(isolation_samples),
        "langfun_pins": LANGFUN_PINS,
    }
