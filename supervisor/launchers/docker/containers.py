"""Our containers on one engine: run, adopt, list, stop and remove them, leaking none.

Why it is built this way:
- Deaths are pushed: `launchers.docker.engine` follows the engine's event stream and
  `ContainerEvents` hands `kill`/`oom`/`die`/`destroy` to the watch of each container
  here. A dead container is removed once its end is recorded.
- `ContainerHandle.kill()` must not block the loop: it schedules a forced removal in the
  engine's nursery, and the engine finishes pending removals (bounded) when it closes.
- A removal that fails while the engine is away stays pending: it is tried again when
  the event stream reconnects (`Containers.recheck`), and as the engine closes.
- Nothing leaks: a container is named before `create`, and `create` is not abandoned on
  cancel, so a failed or cancelled start always knows what to remove; every container
  carries `supervisor.instance=<id>` for start-up reconciliation, and nothing here ever
  removes a container without our instance label.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
import trio

from supervisor.errors import StartError
from supervisor.launchers.docker.events import ContainerEvents, Watch, death, int_or_none
from supervisor.launchers.docker.sdk import (
    ContainerNotFoundError,
    DockerError,
    EngineClient,
    docker_errors,
    force_remove,
)
from supervisor.supervision.policy import Termination

log = structlog.get_logger("supervisor.docker")

INSTANCE_LABEL = "supervisor.instance"
RESOURCE_LABEL = "supervisor.resource"
CONFIG_HASH_LABEL = "supervisor.config-hash"


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
    cap_drop: Sequence[str] = ()
    cap_add: Sequence[str] = ()
    security_opt: Sequence[str] = ()  # e.g. "no-new-privileges"
    runtime: str | None = None  # e.g. "runsc" (gVisor); None: the engine's default
    volumes: Sequence[str] = ()  # "source:/target[:ro]"
    ports: Mapping[str, int | None] = field(default_factory=dict)  # "80/tcp" -> host port
    stop_signal: str | None = None
    # Output kept by the engine (json-file), rotated at `log_max_bytes` into at most
    # `log_files` files; None: the engine's own default driver and settings.
    log_max_bytes: int | None = None
    log_files: int | None = None

    def log_config(self) -> dict[str, Any] | None:
        """The host config's `LogConfig`: json-file (which `docker logs` reads back) with
        `max-size`/`max-file`, so rotation is the engine's and the daemon holds nothing."""
        if self.log_max_bytes is None:
            return None
        options = {"max-size": str(self.log_max_bytes), "max-file": str(self.log_files or 1)}
        return {"Type": "json-file", "Config": options}


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

    def __init__(
        self, containers: Containers, watch: Watch, name: str, ports: Mapping[str, int]
    ) -> None:
        self._containers = containers
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
                await self._containers.stop_and_remove(self._watch, timeout)
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
            self._containers.schedule_removal(self.id)


class Containers:
    """The containers of one engine that carry our instance label, and their watches."""

    def __init__(self, client: EngineClient, instance_id: str, nursery: trio.Nursery) -> None:
        self.instance_id = instance_id
        self.events = ContainerEvents(on_death=self.schedule_removal)
        self._client = client
        self._api = client.api
        self._nursery = nursery
        self._removals: set[str] = set()
        self._removing: dict[str, trio.Event] = {}

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
                created = await trio.to_thread.run_sync(create, limiter=self._client.limiter)
            watch = self.events.watch(created["Id"])  # before start: no event is missed
            await self._client.call(f"start container {name}", self._api.start, watch.id)
            info = await self._client.call(
                f"inspect container {name}", self._api.inspect_container, name
            )
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
            cap_drop=list(spec.cap_drop) or None,
            cap_add=list(spec.cap_add) or None,
            security_opt=list(spec.security_opt) or None,
            runtime=spec.runtime,
            port_bindings={p: ("127.0.0.1", h or None) for p, h in ports.items()} or None,
            log_config=spec.log_config(),
        )
        return config

    async def attach(self, container_id: str) -> ContainerHandle:
        """A handle on an existing container of ours (adoption); it may already be dead."""
        watch = self.events.watch(container_id)
        try:
            info = await self._client.call(
                "inspect container", self._api.inspect_container, watch.id
            )
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
        found = await self._client.call(
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

    async def remove_owned(self, container: OwnedContainer) -> None:
        """Force-remove one of our containers (as listed by `list_owned`).

        Raises:
            DockerError: the engine refused or did not answer.
        """
        await self._remove(container.id)

    async def reap_orphans(
        self, *, keep: Callable[[OwnedContainer], bool], grace: float
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
                await self._client.call(
                    "stop",
                    self._api.stop,
                    container.id,
                    timeout=math.ceil(grace),
                    deadline=grace + self._client.timeout,
                )
        await self._remove(container.id)
        log.warning(
            "orphan_reaped",
            kind="container",
            container=container.id[:12],
            resource=container.resource,
        )

    async def stop_and_remove(self, watch: Watch, timeout: float) -> None:
        if not watch.done.is_set():
            with contextlib.suppress(ContainerNotFoundError):
                await self._client.call(
                    "stop container",
                    self._api.stop,
                    watch.id,
                    timeout=math.ceil(timeout),
                    deadline=timeout + self._client.timeout,
                )
            with trio.move_on_after(2.0):  # the `die` event follows a stop within ms
                await watch.done.wait()
            if not watch.done.is_set():  # the event stream is down: ask
                await self._inspect_into(watch)
        await self._remove(watch.id)

    async def recheck(self) -> None:
        """After a gap in the event stream, ask about every container still awaited, and
        remove what could not be removed while the engine was away."""
        for watch in self.events.awaited():
            try:
                await self._inspect_into(watch)
            except DockerError as exc:  # the next reconnect tries again
                log.warning("container_recheck_failed", container=watch.id[:12], error=str(exc))
        await self.finish_removals(final=False)

    async def _inspect_into(self, watch: Watch) -> None:
        try:
            info = await self._client.call(
                "inspect container", self._api.inspect_container, watch.id
            )
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
            self.schedule_removal(watch.id)

    async def _remove(self, ref: str) -> None:
        """Force-remove `ref` (id or name); concurrent removals of it share one request."""
        if (pending := self._removing.get(ref)) is not None:
            await pending.wait()
            return
        pending = self._removing[ref] = trio.Event()
        try:
            await self._client.call("remove container", force_remove, self._api, ref)
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

    def schedule_removal(self, container_id: str) -> None:
        self._removals.add(container_id)
        try:
            self._nursery.start_soon(self._remove_scheduled, container_id)
        except RuntimeError:  # the engine is closed: reaped at the next start-up
            log.error("container_not_removed", container=container_id, detail="engine closed")

    async def _remove_scheduled(self, container_id: str, *, final: bool = False) -> None:
        if container_id in self._removals:
            await self._discard(container_id, final=final)

    async def finish_removals(self, *, final: bool = True) -> None:
        async with trio.open_nursery() as nursery:
            for container_id in list(self._removals):
                nursery.start_soon(partial(self._remove_scheduled, container_id, final=final))


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
