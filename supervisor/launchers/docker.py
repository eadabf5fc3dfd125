"""Docker containers: run, exec, stop and watch them through one engine's event stream.

Why it is built this way:
- Every request runs in a worker thread through one `CapacityLimiter` per engine, under a
  trio deadline, abandoned on cancel, with errors mapped at the SDK's edge
  (`launchers.docker_sdk`). Long reads have limiters of their own (one thread for the
  event stream, a pool for exec output), so slow execs never starve a stop or the events.
- Deaths are pushed: one long-lived reader per engine follows the engine's event stream,
  filtered on our instance label, and hands `kill`/`oom`/`die`/`destroy` to per-container
  watches on the loop. A dead container is removed once its end is recorded.
- An engine outage is not a death: when the stream ends unexpectedly `engine_up` turns
  False and handles keep waiting; on reconnect the missed events are replayed (`since`,
  deduplicated) and every watched container is inspected, so a death during the outage
  still arrives (pinned by test_docker.py::test_outage_is_not_a_death_and_a_death_...).
- `ContainerHandle.kill()` must not block the loop: it schedules a forced removal in the
  engine's nursery, and the engine finishes pending removals (bounded) when it closes.
- Nothing leaks: a container is named before `create`, and `create` is not abandoned on
  cancel, so a failed or cancelled start always knows what to remove; every container
  carries `supervisor.instance=<id>` for start-up reconciliation, and nothing here ever
  removes a container without our instance label.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import docker
import docker.utils.socket
import structlog
import trio

from supervisor.errors import StartError
from supervisor.launchers.docker_events import (
    ContainerEvents,
    Watch,
    death,
    int_or_none,
    reconnect_delay,
)
from supervisor.launchers.docker_sdk import (
    Capped,
    ContainerNotFoundError,
    DockerError,
    EngineUnavailableError,
    StreamSlot,
    TLSFiles,
    close_when_cancelled,
    docker_errors,
    drain,
    force_remove,
    make_clients,
)
from supervisor.supervision.policy import Termination

__all__ = [
    "CONFIG_HASH_LABEL",
    "INSTANCE_LABEL",
    "RESOURCE_LABEL",
    "ContainerHandle",
    "ContainerNotFoundError",
    "ContainerSpec",
    "DockerEngine",
    "DockerError",
    "EngineUnavailableError",
    "ExecResult",
    "OwnedContainer",
    "TLSFiles",
    "open_docker_engine",
]

log = structlog.get_logger("supervisor.docker")

INSTANCE_LABEL = "supervisor.instance"
RESOURCE_LABEL = "supervisor.resource"
CONFIG_HASH_LABEL = "supervisor.config-hash"
EXEC_GRACE = 2.0  # past the exec timeout, stop reading even if something holds the pipes

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What to run; `name` is a prefix (a random suffix makes it unique)."""

    image: str
    name: str
    command: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    init: bool = True
    memory: int | None = None  # bytes
    cpus: float | None = None
    pids_limit: int | None = None
    network: str | None = None  # None: the engine's default network
    read_only: bool = False
    tmpfs: Mapping[str, str] = field(default_factory=dict)  # path -> mount options
    workdir: str | None = None
    user: str | None = None
    volumes: Sequence[str] = ()  # "source:/target[:ro]"
    ports: Mapping[str, int | None] = field(default_factory=dict)  # "80/tcp" -> host port
    stop_signal: str | None = None


@dataclass(frozen=True, slots=True)
class ExecResult:
    """One command run inside a container; output is capped per stream."""

    exit_code: int | None  # None: still running when we stopped reading
    stdout: bytes
    stderr: bytes
    duration_s: float
    timed_out: bool
    truncated: bool


@dataclass(frozen=True, slots=True)
class OwnedContainer:
    """A container that carries our instance label."""

    id: str
    name: str
    state: str
    labels: Mapping[str, str]

    @property
    def resource(self) -> str | None:
        return self.labels.get(RESOURCE_LABEL)


class ContainerHandle:
    """One container we run (or adopted), as the supervisor sees it."""

    def __init__(self, engine: DockerEngine, watch: Watch, name: str, ports: Mapping[str, int]):
        self._engine = engine
        self._watch = watch
        self._removed = False
        self.id = watch.id
        self.name = name
        self.ports = ports  # "80/tcp" -> the host port on 127.0.0.1

    @property
    def pid(self) -> int | None:
        return None

    @property
    def ident(self) -> str:
        return self.id[:12]

    @property
    def exited(self) -> bool:
        return self._watch.done.is_set()

    async def wait(self) -> Termination:
        await self._watch.done.wait()
        assert self._watch.termination is not None
        return self._watch.termination

    async def stop(self, timeout: float) -> Termination:
        """`docker stop` (stop signal, SIGKILL after `timeout`), then remove; never raises."""
        if not self._removed:
            try:
                await self._engine._stop_and_remove(self._watch, timeout)
                self._removed = True
            except DockerError as exc:
                log.warning("container_stop_failed", container=self.ident, error=str(exc))
                self._watch.finish(Termination("signal", f"stop failed: {exc}"))
        return await self.wait()

    def kill(self) -> None:
        """Force-remove in a background task of the engine; never blocks.

        The engine finishes removals still pending when it closes; what even that misses
        carries our instance label and is reaped at the next start-up.
        """
        if not self._removed:
            self._removed = True
            self._engine._schedule_removal(self.id)


class DockerEngine:
    """One Docker engine: containers, exec and the event stream; see `open_docker_engine`."""

    def __init__(
        self,
        api: docker.APIClient,
        events_api: docker.APIClient,
        instance_id: str,
        nursery: trio.Nursery,
        *,
        timeout: float,
        max_threads: int,
    ) -> None:
        self.instance_id = instance_id
        self._api = api
        self._events_api = events_api
        self._nursery = nursery
        self._timeout = timeout
        self._limiter = trio.CapacityLimiter(max_threads)
        # Long reads get their own threads: slow execs never starve a stop or the events.
        self._exec_limiter = trio.CapacityLimiter(max_threads)
        self._events_limiter = trio.CapacityLimiter(1)
        self._events = ContainerEvents(on_death=self._schedule_removal)
        self._removals: set[str] = set()
        self._removing: dict[str, trio.Event] = {}
        self._stream: Any = None  # the open event stream, for fault-injection tests

    # ------------------------------------------------------------------ engine state

    @property
    def engine_up(self) -> bool:
        """Whether the event stream is connected: False means an outage, not a death."""
        return self._events.engine_up

    @property
    def reconnects(self) -> int:
        return self._events.reconnects

    async def wait_engine(self, up: bool) -> None:
        """Return once `engine_up` is `up`."""
        await self._events.wait_engine(up)

    # ------------------------------------------------------------------ containers

    async def run(self, spec: ContainerSpec) -> ContainerHandle:
        """Create and start a container; nothing is left behind if this fails or is cancelled.

        Raises:
            StartError: the engine refused or did not answer.
        """
        name = f"{spec.name}-{secrets.token_hex(4)}"
        ports = {_port_key(p): h for p, h in spec.ports.items()}
        try:
            with docker_errors(f"container {name}"):  # the SDK validates some settings itself
                host_config = self._make_host_config(spec, ports)
        except DockerError as exc:
            raise StartError(str(exc)) from exc
        create = partial(
            self._api.create_container,
            spec.image,
            command=list(spec.command) if spec.command is not None else None,
            name=name,
            environment=dict(spec.env),
            labels={**spec.labels, INSTANCE_LABEL: self.instance_id},
            host_config=host_config,
            ports=[_port_tuple(p) for p in ports] or None,
            working_dir=spec.workdir,
            user=spec.user,
            stop_signal=spec.stop_signal,
            detach=True,
        )
        watch: Watch | None = None
        try:
            with docker_errors(f"create container from {spec.image}"):
                # Not abandoned on cancel: we must learn whether the container exists.
                created = await trio.to_thread.run_sync(create, limiter=self._limiter)
            watch = self._events.watch(created["Id"])  # before start: no event is missed
            await self._call(f"start container {name}", self._api.start, watch.id)
            info = await self._call(f"inspect container {name}", self._api.inspect_container, name)
        except BaseException as exc:
            if watch is not None:
                watch.forget()
            with trio.CancelScope(shield=True):
                await self._discard(name)
            if isinstance(exc, DockerError):
                raise StartError(str(exc)) from exc
            raise
        log.info("container_started", container=watch.id[:12], name=name, image=spec.image)
        return ContainerHandle(self, watch, name, _host_ports(info))

    def _make_host_config(
        self, spec: ContainerSpec, ports: Mapping[str, int | None]
    ) -> dict[str, Any]:
        # Pure: the SDK only builds a dict here. Ports go to loopback, whatever was asked.
        config: dict[str, Any] = self._api.create_host_config(
            init=spec.init,
            mem_limit=spec.memory,
            nano_cpus=round(spec.cpus * 1e9) if spec.cpus else None,
            pids_limit=spec.pids_limit,
            network_mode=spec.network,
            read_only=spec.read_only or None,
            tmpfs=dict(spec.tmpfs) or None,
            binds=list(spec.volumes) or None,
            port_bindings={p: ("127.0.0.1", h or None) for p, h in ports.items()} or None,
        )
        return config

    async def attach(self, container_id: str) -> ContainerHandle:
        """A handle on an existing container of ours (adoption); it may already be dead."""
        watch = self._events.watch(container_id)
        try:
            info = await self._call("inspect container", self._api.inspect_container, watch.id)
        except BaseException:
            watch.forget()
            raise
        if info["Config"]["Labels"].get(INSTANCE_LABEL) != self.instance_id:
            watch.forget()
            raise ValueError(f"container {container_id[:12]} is not ours")
        self._settle(watch, info)
        return ContainerHandle(self, watch, info["Name"].lstrip("/"), _host_ports(info))

    async def list_owned(self, **labels: str) -> list[OwnedContainer]:
        """Every container with our instance label (and `labels`), running or not."""
        wanted = [f"{INSTANCE_LABEL}={self.instance_id}", *(f"{k}={v}" for k, v in labels.items())]
        found = await self._call(
            "list containers", self._api.containers, all=True, filters={"label": wanted}
        )
        owned = []
        for c in found:
            if c["Labels"].get(INSTANCE_LABEL) != self.instance_id:
                continue  # the filter already says so; never trust it with a removal
            owned.append(
                OwnedContainer(c["Id"], c["Names"][0].lstrip("/"), c["State"], c["Labels"])
            )
        return owned

    async def find(self, resource: str) -> list[OwnedContainer]:
        """Our containers labelled `supervisor.resource=<resource>`."""
        return await self.list_owned(**{RESOURCE_LABEL: resource})

    async def remove_owned(self, container: OwnedContainer) -> None:
        """Force-remove one of our containers (as listed by `list_owned`/`find`).

        Raises:
            DockerError: the engine refused or did not answer.
        """
        await self._remove(container.id)

    async def reap_orphans(
        self, *, keep: Callable[[OwnedContainer], bool] = lambda _: False, grace: float = 2.0
    ) -> list[OwnedContainer]:
        """Stop and remove our containers that `keep` does not spare; return those removed."""
        doomed = [c for c in await self.list_owned() if not keep(c)]
        async with trio.open_nursery() as nursery:
            for c in doomed:
                nursery.start_soon(self._reap_one, c, grace)
        return doomed

    async def _reap_one(self, container: OwnedContainer, grace: float) -> None:
        with contextlib.suppress(ContainerNotFoundError):
            if container.state == "running":
                await self._call(
                    "stop",
                    self._api.stop,
                    container.id,
                    timeout=math.ceil(grace),
                    deadline=grace + self._timeout,
                )
        await self._remove(container.id)
        log.warning(
            "orphan_reaped",
            kind="container",
            container=container.id[:12],
            resource=container.resource,
        )

    async def _stop_and_remove(self, watch: Watch, timeout: float) -> None:
        if not watch.done.is_set():
            with contextlib.suppress(ContainerNotFoundError):
                await self._call(
                    "stop container",
                    self._api.stop,
                    watch.id,
                    timeout=math.ceil(timeout),
                    deadline=timeout + self._timeout,
                )
            with trio.move_on_after(2.0):  # the `die` event follows a stop within ms
                await watch.done.wait()
            if not watch.done.is_set():  # the event stream is down: ask
                await self._inspect_into(watch)
        await self._remove(watch.id)

    async def _inspect_into(self, watch: Watch) -> None:
        try:
            info = await self._call("inspect container", self._api.inspect_container, watch.id)
        except ContainerNotFoundError:
            watch.finish(Termination("liveness", "the container disappeared"))
        else:
            self._settle(watch, info)

    def _settle(self, watch: Watch, info: Mapping[str, Any]) -> None:
        """Finish `watch` (and remove the container) if `info` shows it has ended."""
        state = info["State"]
        if not state.get("Running") and state.get("Status") != "created":
            code = int_or_none(state.get("ExitCode"))
            watch.finish(death(code, None, bool(state.get("OOMKilled"))))
            self._schedule_removal(watch.id)

    async def _remove(self, ref: str) -> None:
        """Force-remove `ref` (id or name); concurrent removals of it share one request."""
        if (pending := self._removing.get(ref)) is not None:
            await pending.wait()
            return
        pending = self._removing[ref] = trio.Event()
        try:
            await self._call("remove container", force_remove, self._api, ref)
        finally:
            del self._removing[ref]
            pending.set()

    async def _discard(self, ref: str, *, final: bool = False) -> bool:
        """Force-remove `ref` (id or name) if it exists; True when it is gone.

        A failure (the engine is down) is logged, not raised, and `ref` stays pending: it
        is tried again when the event stream reconnects, and as the engine closes; what
        is still left then is reaped at the next start-up.
        """
        try:
            await self._remove(ref)
        except DockerError as exc:
            self._removals.add(ref)
            if final:
                log.error(
                    "container_not_removed",
                    container=ref,
                    error=str(exc),
                    detail="it is reaped at the next start-up",
                )
            else:
                log.warning(
                    "container_removal_deferred",
                    container=ref,
                    error=str(exc),
                    detail="retried when the engine answers again",
                )
            return False
        self._removals.discard(ref)
        return True

    def _schedule_removal(self, container_id: str) -> None:
        self._removals.add(container_id)
        try:
            self._nursery.start_soon(self._remove_scheduled, container_id)
        except RuntimeError:  # the engine is closed: reaped at the next start-up
            log.error("container_not_removed", container=container_id, detail="engine closed")

    async def _remove_scheduled(self, container_id: str, *, final: bool = False) -> None:
        if container_id in self._removals:
            await self._discard(container_id, final=final)

    async def _finish_removals(self, *, final: bool = True) -> None:
        async with trio.open_nursery() as nursery:
            for container_id in list(self._removals):
                nursery.start_soon(partial(self._remove_scheduled, container_id, final=final))

    # ------------------------------------------------------------------ exec

    async def exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        timeout: float,
        output_limit: int,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> ExecResult:
        """Run `argv` in the container; after `timeout` its process group is SIGKILLed.

        The kill comes from `timeout -s KILL` (coreutils or busybox) inside the container,
        which runs the command in its own process group; the image must provide it.

        Raises:
            DockerError: the engine refused or did not answer.
        """
        command = ["timeout", "-s", "KILL", f"{timeout:.3f}", *argv]
        created = await self._call(
            "exec",
            self._api.exec_create,
            container_id,
            command,
            workdir=workdir,
            environment=dict(env) if env else None,
            user=user or "",
        )
        started = trio.current_time()
        out, err = Capped(output_limit), Capped(output_limit)
        with trio.move_on_after(timeout + EXEC_GRACE) as reading:
            await self._read_stream(
                partial(self._api.exec_start, created["Id"], stream=True, demux=True),
                partial(drain, out=out, err=err),
                "exec",
                self._exec_limiter,
            )
        duration = trio.current_time() - started
        info = await self._call("inspect exec", self._api.exec_inspect, created["Id"])
        exit_code = None if info["Running"] else int_or_none(info["ExitCode"])
        timed_out = reading.cancelled_caught or (duration >= timeout and exit_code in (124, 137))
        return ExecResult(
            exit_code, out.data(), err.data(), duration, timed_out, out.truncated or err.truncated
        )

    async def exec_input(
        self,
        container_id: str,
        argv: Sequence[str],
        data: bytes,
        *,
        timeout: float,
        output_limit: int,
        workdir: str | None = None,
    ) -> ExecResult:
        """Run `argv` with `data` on its standard input (say, `tar -x`), killed after `timeout`.

        `put_archive` cannot do this job: it writes beside a tmpfs mount, not into it, and
        refuses a read-only container outright; a sandbox's workdir is both.

        Raises:
            DockerError: the engine refused or did not answer.
        """
        command = ["timeout", "-s", "KILL", f"{timeout:.3f}", *argv]
        created = await self._call(
            "exec", self._api.exec_create, container_id, command, stdin=True, workdir=workdir
        )
        started = trio.current_time()
        out, err = Capped(output_limit), Capped(output_limit)
        feed = partial(_feed_exec, self._api, created["Id"], data, out=out, err=err)
        with docker_errors("exec with input"), trio.fail_after(timeout + EXEC_GRACE):
            await trio.to_thread.run_sync(feed, limiter=self._exec_limiter, abandon_on_cancel=True)
        duration = trio.current_time() - started
        info = await self._call("inspect exec", self._api.exec_inspect, created["Id"])
        exit_code = None if info["Running"] else int_or_none(info["ExitCode"])
        timed_out = duration >= timeout and exit_code in (124, 137)
        return ExecResult(
            exit_code, out.data(), err.data(), duration, timed_out, out.truncated or err.truncated
        )

    # ------------------------------------------------------------------ plumbing

    async def _call(
        self,
        action: str,
        fn: Callable[..., T],
        *args: Any,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> T:
        """`fn(*args, **kwargs)` in a worker thread, under a deadline, errors mapped."""
        with docker_errors(action), trio.fail_after(deadline or self._timeout):
            return await trio.to_thread.run_sync(
                partial(fn, *args, **kwargs), limiter=self._limiter, abandon_on_cancel=True
            )

    async def _read_stream(
        self,
        open_stream: Callable[[], Any],
        consume: Callable[[Any], None],
        action: str,
        limiter: trio.CapacityLimiter,
    ) -> None:
        """Open a CancellableStream and `consume` it in a thread; close it however we leave."""
        slot = StreamSlot()
        try:
            with docker_errors(action), trio.fail_after(self._timeout):
                await trio.to_thread.run_sync(
                    slot.fill, open_stream, limiter=self._limiter, abandon_on_cancel=True
                )
            with docker_errors(action):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(close_when_cancelled, slot)
                    # Not abandoned on cancel: `slot.close()` is what ends the read.
                    await trio.to_thread.run_sync(slot.consume, consume, limiter=limiter)
                    nursery.cancel_scope.cancel()
        finally:
            slot.close()

    async def _follow_events(self, task_status: trio.TaskStatus[None]) -> None:
        """Read the event stream for ever: reconnect with backoff, re-check after a gap."""
        filters = {"label": f"{INSTANCE_LABEL}={self.instance_id}", "type": "container"}
        failures = 0
        connected = False

        def on_connect(stream: Any) -> None:
            nonlocal connected, failures, task_status
            self._stream = stream
            connected = True
            failures = 0
            if self._events.connected():
                self._nursery.start_soon(self._recheck)
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED

        def pump(stream: Any) -> None:
            trio.from_thread.run_sync(on_connect, stream)
            for event in stream:
                trio.from_thread.run_sync(self._events.dispatch, event)

        while True:
            connected = False
            open_events = partial(
                self._events_api.events, decode=True, filters=filters, since=self._events.since
            )
            try:
                await self._read_stream(open_events, pump, "follow events", self._events_limiter)
            except DockerError as exc:
                if failures == 0:
                    log.warning("docker_event_stream_failed", error=str(exc))
            except Exception:  # a reader that dies must not end supervision: reconnect
                log.exception("docker_event_stream_crashed")
            self._stream = None
            if connected:
                log.warning("docker_event_stream_ended")
            failures += 1
            self._events.disconnected()
            task_status.started()  # an engine that is down at start-up is "not up yet"
            task_status = trio.TASK_STATUS_IGNORED
            await trio.sleep(reconnect_delay(failures))

    async def _recheck(self) -> None:
        """After a gap in the event stream, ask about every container still awaited, and
        remove what could not be removed while the engine was away."""
        for watch in self._events.awaited():
            try:
                await self._inspect_into(watch)
            except DockerError as exc:  # the next reconnect tries again
                log.warning("container_recheck_failed", container=watch.id[:12], error=str(exc))
        await self._finish_removals(final=False)


def _feed_exec(
    api: docker.APIClient, exec_id: str, data: bytes, *, out: Capped, err: Capped
) -> None:
    """Start an exec on a hijacked socket, write `data`, half-close, read to the end.

    The half-close is what the engine turns into EOF on the command's stdin.
    """
    sock = api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)  # unix: a SocketIO over the socket; https: the socket
    try:
        raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)
        for stream, chunk in docker.utils.socket.frames_iter(sock, tty=False):
            (err if stream == docker.utils.socket.STDERR else out).add(chunk)
    finally:
        sock.close()
        raw.close()


def _port_key(port: str) -> str:
    return port if "/" in port else f"{port}/tcp"


def _port_tuple(port: str) -> tuple[int, str]:
    number, proto = port.split("/")
    return int(number), proto


def _host_ports(info: Mapping[str, Any]) -> dict[str, int]:
    bound = (info.get("NetworkSettings") or {}).get("Ports") or {}
    return {
        port: int(bindings[0]["HostPort"])
        for port, bindings in bound.items()
        if bindings and bindings[0].get("HostPort")
    }


@asynccontextmanager
async def open_docker_engine(
    base_url: str | None,
    instance_id: str,
    *,
    tls: TLSFiles | None = None,
    timeout: float = 30.0,
    max_threads: int = 16,
) -> AsyncIterator[DockerEngine]:
    """An engine client whose event stream runs until the context exits.

    `base_url` None means the environment's engine (DOCKER_HOST, else the local socket).
    An engine that does not answer yet is not an error: `engine_up` says when it does.

    Raises:
        DockerError: the URL or TLS files are unusable.
    """
    if not instance_id:
        raise ValueError("instance_id must not be empty: it is what marks our containers")
    with docker_errors(f"connect to {base_url or 'the default Docker engine'}"):
        api, events_api = await trio.to_thread.run_sync(make_clients, base_url, tls, timeout)
    try:
        async with trio.open_nursery() as nursery:
            engine = DockerEngine(
                api, events_api, instance_id, nursery, timeout=timeout, max_threads=max_threads
            )
            await nursery.start(engine._follow_events)
            try:
                yield engine
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(timeout):
                    await engine._finish_removals()
                nursery.cancel_scope.cancel()
    finally:
        api.close()
        events_api.close()
