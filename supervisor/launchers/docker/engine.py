"""One Docker engine: run, exec, stop and watch containers through its event stream.

`DockerEngine` is the face of one engine; the work lives beside it: `containers` (run,
adopt, stop, remove, `ContainerHandle`), `exec` (commands in a container), `logs` (a
container's output, from the engine's log stream), `events`
(watches fed by the stream) and `sdk` (the blocking SDK's edges).

Why it is built this way:
- Every request runs in a worker thread through one `CapacityLimiter` per engine, under a
  trio deadline, abandoned on cancel, with errors mapped at the SDK's edge
  (`launchers.docker.sdk`). Long reads have limiters of their own (one thread for the
  event stream, a pool for exec output), so slow execs never starve a stop or the events.
- Deaths are pushed: one long-lived reader per engine follows the engine's event stream,
  filtered on our instance label, and hands `kill`/`oom`/`die`/`destroy` to per-container
  watches on the loop. A dead container is removed once its end is recorded.
- An engine outage is not a death: when the stream ends unexpectedly `engine_up` turns
  False and handles keep waiting; on reconnect the missed events are replayed (`since`,
  deduplicated) and every watched container is inspected, so a death during the outage
  still arrives (pinned by test_docker.py::test_outage_is_not_a_death_and_a_death_...).
- Reconnects wait as restarts do, by the restart policy's `backoff_delay`: the first at
  once, then 0.1 s doubling to 5 s, without jitter (one reader per engine: nothing to
  spread).
- Closing the engine finishes pending removals (bounded); what even that misses carries
  our instance label and is reaped at the next start-up.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
import trio

from supervisor.config.types import BackoffConfig
from supervisor.launchers.docker.containers import (
    INSTANCE_LABEL,
    RESOURCE_LABEL,
    ContainerHandle,
    Containers,
    ContainerSpec,
    OwnedContainer,
)
from supervisor.launchers.docker.exec import (
    ExecResult,
    OutputSink,
    run_exec,
    run_exec_attached,
    run_exec_input,
)
from supervisor.launchers.docker.logs import LogReaders
from supervisor.launchers.docker.nodes import NodeStates
from supervisor.launchers.docker.probe import probe_engine
from supervisor.launchers.docker.sdk import (
    DockerError,
    EngineClient,
    TLSFiles,
    docker_errors,
    make_clients,
)
from supervisor.launchers.docker.services import Services
from supervisor.supervision.policy import backoff_delay

if TYPE_CHECKING:
    import docker

log = structlog.get_logger("supervisor.docker")

# Pinned by tests/unit/launchers/docker/test_engine.py: 0, 0.1, 0.2, 0.4 ... 5 s.
MAX_CATCH_UP = 2048  # events read back after a gap (the router remembers as many)
RECONNECT_BACKOFF = BackoffConfig(initial=0.1, factor=2.0, max=5.0, jitter=0.0)


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
        base_url: str | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        self.instance_id = instance_id
        self._base_url = base_url
        self._tls = tls
        self._client = EngineClient(api, timeout=timeout, max_threads=max_threads)
        self._events_api = events_api
        self._nursery = nursery
        # Long reads get their own threads: slow execs never starve a stop or the events.
        self._exec_limiter = trio.CapacityLimiter(max_threads)
        self._events_limiter = trio.CapacityLimiter(1)
        self._containers = Containers(self._client, instance_id, nursery)
        self.services = Services(self._client, instance_id)  # when it is a swarm manager
        self._logs = LogReaders(self._client, nursery)
        self._events = self._containers.events
        self._stream: Any = None  # the open event stream, for fault-injection tests
        self._nodes: NodeStates | None = None

    def nodes(self) -> NodeStates:
        """The swarm's node states, when this engine is a manager (followed from the
        first call on, in this engine's nursery)."""
        if self._nodes is None:
            self._nodes = NodeStates(self._client, self._events_api)
            self._nursery.start_soon(self._nodes.serve)
        return self._nodes

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

    async def accepts_connections(self, timeout: float) -> bool:
        """Whether the engine answers a new connection within `timeout`. A stopping
        dockerd closes its listener first and serves open connections a while longer:
        only a fresh client tells."""
        with trio.move_on_after(timeout):
            try:
                await probe_engine(self._base_url, self._tls, timeout)
            except DockerError:
                return False
            return True
        return False

    # ------------------------------------------------------------------ containers

    async def run(self, spec: ContainerSpec) -> ContainerHandle:
        """Create and start a container; nothing is left behind if this fails or is cancelled.

        Raises:
            StartError: the engine refused or did not answer.
        """
        return await self._containers.run(spec)

    async def attach(self, container_id: str) -> ContainerHandle:
        """A handle on an existing container of ours (adoption); it may already be dead."""
        return await self._containers.attach(container_id)

    async def list_owned(self, **labels: str) -> list[OwnedContainer]:
        """Every container with our instance label (and `labels`), running or not."""
        return await self._containers.list_owned(**labels)

    async def find(self, resource: str) -> list[OwnedContainer]:
        """Our containers labelled `supervisor.resource=<resource>`."""
        return await self.list_owned(**{RESOURCE_LABEL: resource})

    async def remove_owned(self, container: OwnedContainer) -> None:
        """Force-remove one of our containers (as listed by `list_owned`/`find`).

        Raises:
            DockerError: the engine refused or did not answer.
        """
        await self._containers.remove_owned(container)

    async def reap_orphans(
        self, *, keep: Callable[[OwnedContainer], bool] = lambda _: False, grace: float = 2.0
    ) -> list[OwnedContainer]:
        """Stop and remove our containers that `keep` does not spare; return those removed."""
        return await self._containers.reap_orphans(keep=keep, grace=grace)

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
        stdin: bytes | None = None,
        output: OutputSink | None = None,
        more: trio.MemoryReceiveChannel[bytes] | None = None,
        signals: trio.MemoryReceiveChannel[int] | None = None,
    ) -> ExecResult:
        """Run `argv` in the container; after `timeout` its process group is SIGKILLed.

        The kill comes from `timeout -s KILL` (coreutils or busybox) inside the container,
        which runs the command in its own process group; the image must provide it. With
        `stdin` (fed, then closed) or `output` (given the output as it comes), the exec is
        attached, and its group is also killed if the caller is cancelled.

        Raises:
            DockerError: the engine refused or did not answer.
        """
        if any(x is not None for x in (stdin, output, more, signals)):
            return await run_exec_attached(
                self._client,
                self._exec_limiter,
                container_id,
                argv,
                timeout=timeout,
                output_limit=output_limit,
                workdir=workdir,
                env=env,
                user=user,
                stdin=stdin,
                output=output,
                more=more,
                signals=signals,
            )
        return await run_exec(
            self._client,
            self._exec_limiter,
            container_id,
            argv,
            timeout=timeout,
            output_limit=output_limit,
            workdir=workdir,
            env=env,
            user=user,
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

        Raises:
            DockerError: the engine refused or did not answer.
        """
        return await run_exec_input(
            self._client,
            self._exec_limiter,
            container_id,
            argv,
            data,
            timeout=timeout,
            output_limit=output_limit,
            workdir=workdir,
        )

    # ------------------------------------------------------------------ output

    @property
    def log_streams(self) -> int:
        """Containers' log streams being read now (follows, and tails under way)."""
        return self._logs.active

    def logs(
        self, container_id: str, stream: str, lines: int, follow: bool
    ) -> AsyncGenerator[bytes, None]:
        """The last `lines` lines of the container's `stream` ("stdout" or "stderr"); with
        `follow`, b"" once the engine's stream is open, then each piece as it comes, until
        the container ends, the caller leaves or the engine closes.

        Raises:
            DockerError: the container is gone, or the engine refused or did not answer.
        """
        return self._logs.read(container_id, stream, lines, follow)

    # ------------------------------------------------------------------ event stream

    async def finish_removals(self) -> None:
        """Wait for the removals still under way (at close)."""
        await self._containers.finish_removals()

    async def _catch_up(self, filters: Mapping[str, str], since: str | None) -> None:
        """After a gap in the event stream: apply the events missed while away (read up
        to now, so they come before anything else), then ask about every container still
        awaited. The stream replays the same events too; the router drops them as seen.
        Without this, an inspect could settle a container killed during the gap before
        its replayed `kill` event arrived: exit code 137 instead of SIGKILL."""
        if since is not None:
            until = f"{time.time():.9f}"

            def read() -> list[Any]:
                events = self._client.api.events(
                    decode=True, filters=filters, since=since, until=until
                )
                return list(itertools.islice(events, MAX_CATCH_UP))

            try:
                missed = await self._client.call("replay events", read)
            except DockerError as exc:  # the inspects below still settle what ended
                log.warning("docker_event_replay_failed", error=str(exc))
                missed = []
            for event in missed:
                self._events.dispatch(event)
        await self._containers.recheck()

    async def serve_events(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
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
                self._nursery.start_soon(self._catch_up, filters, since)
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED

        def pump(stream: Any) -> None:
            trio.from_thread.run_sync(on_connect, stream)
            for event in stream:
                trio.from_thread.run_sync(self._events.dispatch, event)

        while True:
            connected = False
            since = self._events.since
            open_events = partial(
                self._events_api.events, decode=True, filters=filters, since=self._events.since
            )
            try:
                await self._client.read_stream(
                    open_events, pump, "follow events", self._events_limiter
                )
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
            await trio.sleep(backoff_delay(failures, RECONNECT_BACKOFF, 0.0))


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
                api, events_api, instance_id, nursery, timeout=timeout, max_threads=max_threads,
                base_url=base_url, tls=tls,
            )  # fmt: skip
            await nursery.start(engine.serve_events)
            try:
                yield engine
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(timeout):
                    await engine.finish_removals()
                nursery.cancel_scope.cancel()
    finally:
        api.close()
        events_api.close()
