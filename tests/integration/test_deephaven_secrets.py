"""A launched Deephaven server's PSK, planted with a marker, looked for where others can read it.

`ps` shows every process's argv to every user; /proc/PID/environ shows its initial
environment to its owner (and root) for its whole life; `docker inspect` shows a
container's config to anyone with the engine's socket. The key must be in none of them,
for a local server and its helpers as for a container and every process in it, and the
server must still take it (and refuse another).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from supervisor.errors import DeephavenClientError, NotRunningError
from supervisor.launchers.deephaven.client import ConnectSpec, liveness_of, open_client
from supervisor.launchers.deephaven.container import CONTAINER_CONFIG_DIR
from supervisor.launchers.deephaven.launch import DeephavenCredentials
from supervisor.launchers.deephaven.output import REDACTED
from supervisor.launchers.docker import DockerEngine
from supervisor.launchers.local import LocalLauncher
from supervisor.resources.deephaven import DeephavenResource
from supervisor.supervision.states import Liveness, State
from tests.integration.conftest import children_of
from tests.integration.test_deephaven import (
    DH_IMAGE,
    SERVER_START,
    launched,
    open_session_with,
    supervised,
)
from tests.integration.test_docker import docker_cli

pytestmark = pytest.mark.slow


def planted() -> str:
    """A key nothing else could contain by accident, with what a config file must escape."""
    return f"PLANTED-PSK-{uuid.uuid4().hex} #!=:\\u0041 [x]{{y}},z"


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid` (the guardian included)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children_of(todo.pop(), guardian=True) - found:
            found.add(child)
            todo.append(child)
    return found


def exposed(pids: Iterable[int]) -> dict[int, bytes]:
    """What others can read of each process: its argv and its environment, NUL-joined."""
    shown = {}
    for pid in pids:
        try:
            shown[pid] = b"\0".join(
                Path(f"/proc/{pid}/{part}").read_bytes() for part in ("cmdline", "environ")
            )
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile: it shows nothing any more
    return shown


async def assert_refused(launcher: LocalLauncher, resource: DeephavenResource) -> None:
    """Another key is rejected: the server checks the one it was given."""
    creds = DeephavenCredentials(**resource.credentials())
    assert creds is not None
    client = await open_client(launcher)
    try:
        wrong = ConnectSpec(creds.host, creds.port, creds.auth_type, planted())
        with pytest.raises(DeephavenClientError) as refused:
            await client.connect(wrong, 30)
        assert liveness_of(refused.value) is Liveness.UNAUTHORIZED
    finally:
        await client.close()


async def test_python_launch_puts_the_psk_in_no_argv_or_environment(
    launcher: LocalLauncher,
) -> None:
    """The server, its client helper and every other descendant of this test show no
    trace of the key, yet the server accepts it and refuses another."""
    psk = planted()
    async with supervised(launched(token=psk), launcher) as (run, resource):
        await run.entered("dh", State.RUNNING, timeout=SERVER_START)
        server, client = run["dh"].snapshot().pid, resource.client
        assert server is not None
        assert client is not None
        shown = exposed(descendants(os.getpid()))
        assert {server, client.pid} <= set(shown)
        # The scan reads what it should: the server's JVM options and resource variable.
        assert b"-Xmx1024m" in shown[server]
        assert b"SUPERVISOR_RESOURCE=dh" in shown[server]
        leaks = [pid for pid, text in shown.items() if psk.encode() in text]
        assert leaks == [], f"the PSK is readable in /proc of {leaks}"

        assert await trio.to_thread.run_sync(open_session_with, resource) == 3
        await assert_refused(launcher, resource)
        assert run["dh"].liveness is Liveness.ONLINE


async def test_docker_launch_puts_the_psk_only_in_a_read_only_private_file(
    launcher: LocalLauncher, dh_engine: DockerEngine
) -> None:
    """`docker inspect` and every process of the container (as the host sees them) show no
    trace of the key; it is in a read-only 0600 file, of which the host keeps no copy.
    The server's output, kept by the engine, is read back (a tail, a follow) redacted."""
    psk = planted()
    config = launched(launch="docker", image=DH_IMAGE, token=psk)
    async with supervised(config, launcher, docker=dh_engine) as (run, resource):
        await run.entered("dh", State.RUNNING, timeout=SERVER_START)
        container = run["dh"].snapshot().ident
        assert container is not None
        inspected = await docker_cli("inspect", container)
        assert psk not in inspected
        info = json.loads(inspected)[0]
        assert "-Dauthentication.psk" not in json.dumps(info["Config"])

        target = f"{CONTAINER_CONFIG_DIR}/deephaven.prop"
        [mount] = [m for m in info["Mounts"] if m["Destination"] == target]
        assert mount["RW"] is False
        assert not os.path.exists(mount["Source"])  # read at start, no copy left here
        mode = await docker_cli("exec", container, "stat", "-c", "%a %s", target)
        assert mode.split()[0] == "600"
        assert int(mode.split()[1]) > len(psk)

        init = info["State"]["Pid"]
        shown = exposed({init, *descendants(init)})
        assert any(b"server.py" in text for text in shown.values())  # the scan sees the server
        leaks = [pid for pid, text in shown.items() if psk.encode() in text]
        assert leaks == [], f"the PSK is readable in /proc of container processes {leaks}"

        assert await trio.to_thread.run_sync(open_session_with, resource) == 3
        await assert_refused(launcher, resource)
        assert run["dh"].liveness is Liveness.ONLINE
        await resource.run_script(f"print('use ' + {psk!r} + ' to connect', flush=True)", 30)
        await trio.sleep(2)
        raw = await docker_cli("logs", container, check=False)
        print("RAW", raw[-3000:])
        for stream in ("stdout", "stderr"):
            got = b"".join([p async for p in resource.output().read(stream, 10000, False)])
            print(stream, len(got), got[-2000:])

        # Printed in the server (the official image prints the key at start-up too).
        async with aclosing(resource.output().read("stdout", 0, True)) as follow:
            assert await anext(follow) == b""  # the engine's stream is open
            await resource.run_script(f"print('use ' + {psk!r} + ' to connect', flush=True)", 30)
            followed = b""
            with trio.fail_after(30):
                async for piece in follow:
                    followed += piece
                    if b" to connect\n" in followed:
                        break
        assert f"use {REDACTED} to connect\n".encode() in followed
        tail = b"".join([p async for p in resource.output().read("stdout", 100, False)])
        assert f"use {REDACTED} to connect\n".encode() in tail
        assert psk.encode() not in followed + tail
        assert psk in await docker_cli("logs", container)  # the engine keeps it as printed
    with pytest.raises(NotRunningError):  # stopped: its container went, its output with it
        await anext(resource.output().read("stdout", 10, False))
