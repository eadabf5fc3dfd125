"""Fixtures for integration tests: real children, real clock, real launcher."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio

from supervisor.config.load import load_text
from supervisor.launchers import guardian
from supervisor.launchers.docker import DockerEngine, open_docker_engine
from supervisor.launchers.local import LocalLauncher, open_local_launcher
from supervisor.runtime.build import build_supervisors, stop_in_order
from supervisor.runtime.kinds import Context
from supervisor.supervision.bus import EventBus
from supervisor.supervision.states import State, Transition
from supervisor.supervision.supervisor import ResourceSupervisor
from tests.integration.test_docker import docker_cli, remove_labelled

DH_IMAGE = "supervisor-test/deephaven:bookworm"  # tests/provision_deephaven_image.sh


@pytest.fixture
async def launcher() -> AsyncIterator[LocalLauncher]:
    async with open_local_launcher() as launcher:
        yield launcher


@pytest.fixture
async def dh_engine() -> AsyncIterator[DockerEngine]:
    """A Docker engine under an instance id of its own, for a docker-launched Deephaven
    server (`DH_IMAGE` must be built); every container it labelled is removed after."""
    if shutil.which("docker") is None:
        pytest.fail("no docker CLI (tests/provision.sh installs it)")
    if "Error" in await docker_cli("image", "inspect", DH_IMAGE, "--format", "ok", check=False):
        pytest.fail(f"{DH_IMAGE} is not built (tests/provision_deephaven_image.sh builds it)")
    instance = f"test-{uuid.uuid4().hex[:12]}"
    try:
        async with open_docker_engine(None, instance) as engine:
            yield engine
    finally:
        await remove_labelled(instance)


@dataclass
class Running:
    """Supervisors built from a config snippet, and every event they published."""

    supervisors: dict[str, ResourceSupervisor]
    bus: EventBus
    events: list[Transition] = field(default_factory=list)

    def __getitem__(self, name: str) -> ResourceSupervisor:
        return self.supervisors[name]

    def of(self, name: str) -> list[Transition]:
        return [e for e in self.events if e.name == name]

    async def until(
        self, name: str, predicate: Callable[[ResourceSupervisor], bool], timeout: float = 15.0
    ) -> None:
        """Wait (bounded) until `predicate` holds for resource `name`."""
        with trio.fail_after(timeout):
            await self.supervisors[name].wait_for(predicate)

    async def entered(
        self, name: str, state: State, count: int = 1, timeout: float = 15.0
    ) -> Transition:
        """Wait until `name` has entered `state` `count` times; return that event."""

        def enough(_: ResourceSupervisor) -> bool:
            return sum(e.to_state == state for e in self.of(name)) >= count

        await self.until(name, enough, timeout)
        return [e for e in self.of(name) if e.to_state == state][count - 1]


@asynccontextmanager
async def supervise(toml: str, launcher: LocalLauncher) -> AsyncIterator[Running]:
    """Build supervisors from `toml`, start them all, stop them in order at the end."""
    config = load_text(toml)
    bus = EventBus()
    supervisors = build_supervisors(config, Context(launcher), bus, rng=random.Random(0))
    running = Running(supervisors, bus)
    bus.add_listener(running.events.append)
    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as starters:
            for sup in running.supervisors.values():
                starters.start_soon(nursery.start, sup.serve)
        yield running
        with trio.fail_after(30):
            await stop_in_order(running.supervisors)
        nursery.cancel_scope.cancel()


async def process_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait (bounded) for any process, ours or not, to exit: a pidfd says when."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(timeout):
            await trio.lowlevel.wait_readable(fd)
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def is_guardian(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return guardian.NAME.encode() in f.read()
    except FileNotFoundError:
        return False


def children_of(pid: int, *, guardian: bool = False) -> set[int]:
    """Direct children of `pid`, whichever of its threads forked them (not the guardian)."""
    found: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.update(int(c) for c in f.read().split())
        except FileNotFoundError:
            continue
    return found if guardian else {p for p in found if not is_guardian(p)}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `supervisor ARGS...` as operators do; bounded, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
