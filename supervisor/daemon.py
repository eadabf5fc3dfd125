"""The composition root: builds everything from a Config and runs it until told to stop.

Start-up: the launcher (and its forking thread) opens first and closes last, so every
child it started is killed and reaped even if everything above it fails. All resources
start concurrently; each waits for its `depends_on` to be RUNNING, and the daemon is
ready once every one of them has made its first start attempt.

Shutdown (SIGTERM or SIGINT): each resource stops after everything that depends on it has
stopped, all within `shutdown_timeout`; whatever is still up then is killed. A second
SIGINT skips the graceful part.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import structlog
import trio
from prometheus_client import CollectorRegistry

from supervisor import __version__
from supervisor.api.edge import Limits
from supervisor.api.server import ApiServer, serve_api
from supervisor.config.diff import ReloadPlan
from supervisor.config.environment import EnvironmentConfig
from supervisor.config.load import load_default, load_file
from supervisor.config.schema import Config
from supervisor.errors import NoCredentialsError, NotRunningError, ResourceNotFoundError
from supervisor.launchers.docker import DockerEngines, DockerError
from supervisor.launchers.local import LocalLauncher, open_local_launcher
from supervisor.observability.health import health_problem, summary
from supervisor.observability.logging import log_transition
from supervisor.observability.loop import LoopMonitor
from supervisor.observability.metrics import Metrics
from supervisor.reloading import Reloader, freeze_heap
from supervisor.resources.deephaven import DeephavenResource
from supervisor.sandbox.environment import Environment
from supervisor.sandbox.service import SandboxService
from supervisor.signals import serve_signals
from supervisor.state import StateDir, reap_orphans
from supervisor.supervision.bus import EventBus
from supervisor.supervision.concurrency import race
from supervisor.supervision.settings import Snapshot
from supervisor.supervision.states import State
from supervisor.supervision.supervisor import ResourceSupervisor
from supervisor.systemd import Notifier, serve_watchdog, watchdog_interval
from supervisor.wiring import (
    adoptable,
    build_supervisors,
    make_environment,
    make_resource,
    make_supervisor,
    read_token,
    reconfigure,
    settings_for,
    stop_in_order,
)

log = structlog.get_logger("supervisor.daemon")

EXTEND_EVERY = 5.0  # seconds between EXTEND_TIMEOUT_USEC messages during a slow shutdown
WATCHDOG_MAX_LAG = 5.0  # a loop this late is not petting the watchdog
STUCK_MARGIN = 30.0  # past its own timeout plus this, a STARTING/STOPPING resource is wedged
REAP_TIMEOUT = 10.0  # an engine that does not answer is not waited for at start-up
METRICS_REUSE = 1.0  # seconds a slow /metrics page may be served again
METRICS_SLOW_RENDER = 0.02  # what counts as slow


class Daemon:
    """Runs one config: the API, resources under supervision, orderly shutdown.

    Implements the API's `Control` protocol.
    """

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        registry: CollectorRegistry | None = None,
        event_history: int = 10_000,
        loader: Callable[[], Config] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        # Where a reload reads the config from: the file, or what the caller says.
        self.reloader = Reloader(
            self, loader or (partial(load_file, config_path) if config_path else None)
        )
        self.bus = EventBus(history=event_history)
        self.metrics = Metrics(registry)
        self.loop = LoopMonitor(on_sample=self.metrics.loop_lag.set)
        self.supervisors: dict[str, ResourceSupervisor] = {}
        self.api: ApiServer | None = None
        self.api_bound = trio.Event()
        self.ready = trio.Event()
        self._stop = trio.Event()
        self._force = trio.Event()
        self._stopping = False
        self._launcher: LocalLauncher | None = None
        self._engines: DockerEngines | None = None
        self._metrics_page: tuple[int, float, bytes] | None = None  # (bus seq, time, page)
        self._root: trio.Nursery | None = None
        self._scopes: dict[str, trio.CancelScope] = {}
        self._status_dirty = trio.Event()
        self.notifier = Notifier()
        self.sandbox_service = SandboxService(self._make_environment)

    def _make_environment(self, name: str, config: EnvironmentConfig) -> Environment:
        assert self._launcher is not None
        return make_environment(
            name,
            config,
            launcher=self._launcher,
            state_path=self.config.daemon.state_path,
            bus=self.bus,
            metrics=self.metrics,
            engines=self._engines,
        )

    # ------------------------------------------------------------- the Control protocol

    @property
    def is_ready(self) -> bool:
        return self.ready.is_set()

    @property
    def is_stopping(self) -> bool:
        return self._stopping

    @property
    def events(self) -> EventBus:
        return self.bus

    @property
    def sandboxes(self) -> SandboxService:
        return self.sandbox_service

    def snapshots(self) -> list[Snapshot]:
        return [sup.snapshot() for sup in self.supervisors.values()]

    def _supervisor(self, name: str) -> ResourceSupervisor:
        try:
            return self.supervisors[name]
        except KeyError:
            raise ResourceNotFoundError(f"no resource named {name!r}") from None

    def credentials(self, name: str) -> dict[str, Any]:
        resource = self._supervisor(name).resource
        if not isinstance(resource, DeephavenResource):
            raise NoCredentialsError(f"{name} is a {resource.kind} resource: it has no credentials")
        creds = resource.credentials()
        if creds is None:
            raise NotRunningError(f"{name} is not running: no credentials yet")
        return creds.to_json()

    def command(self, name: str, action: str) -> Snapshot:
        sup = self._supervisor(name)
        {"start": sup.start, "stop": sup.stop, "restart": sup.restart}[action]()
        log.info("operator_command", resource=name, action=action)
        return sup.snapshot()

    async def reload(self, *, dry_run: bool) -> dict[str, Any]:
        """Re-read the config file and apply what changed; serialized with other reloads.

        Raises:
            ConfigError: the file is invalid; the running config is untouched.
        """
        return await self.reloader.reload(dry_run=dry_run)

    def request_reload(self) -> None:
        """Reload soon (SIGHUP); a burst of requests coalesces into one pending reload."""
        self.reloader.request()

    def check_config(self, new: Config, plan: ReloadPlan) -> None:
        self.sandbox_service.check(new.environments, plan.environments)

    async def apply_config(self, new: Config, plan: ReloadPlan) -> None:
        """Make the running daemon match `new`, touching only what `plan` names."""
        assert self._launcher is not None
        assert self._root is not None
        await self._engines_for(new)  # before anything changes: new hosts are usable
        self._launcher.withhold(self.config.secret_env_names() | new.secret_env_names())
        removed = {name: self.supervisors[name] for name in plan.removed}
        await stop_in_order(removed)
        for name, sup in removed.items():
            self._scopes.pop(name).cancel()
            self.metrics.forget(name, sup.resource.kind)
        self.config = new
        existing = {n: s for n, s in self.supervisors.items() if n not in removed}
        added = []
        # One pass in start order: an added or rebuilt resource can find what it depends
        # on (an Enterprise session its factory), whether that is new, rebuilt or kept.
        for name in new.start_order():
            if name in plan.added:
                existing[name] = make_supervisor(
                    name,
                    new,
                    self._launcher,
                    self.bus,
                    existing,
                    on_check=self.metrics.observe_check,
                    engines=self._engines,
                )
                added.append(existing[name])
            elif name in plan.restarted:
                sup = existing[name]
                sup.resource = make_resource(
                    name, new.resources[name], self._launcher, self._engines, existing
                )
                sup.update(settings_for(new, name))
                if sup.state in (State.STARTING, State.RUNNING, State.BACKOFF):
                    sup.restart("reload")
                elif sup.state is State.FATAL:
                    sup.start("reload")
        for name in plan.updated:
            sup = self.supervisors[name]
            reconfigure(sup.resource, new.resources[name])
            sup.update(settings_for(new, name))
            if sup.state is State.FATAL:  # its config changed: worth trying at once
                sup.start("reload")
        for name, sup in existing.items():
            sup.depends_on = tuple(existing[d] for d in new.resources[name].depends_on)
        self.supervisors = {name: existing[name] for name in new.start_order()}
        async with trio.open_nursery() as starters:
            for sup in added:
                starters.start_soon(self._root.start, self._serve_supervisor, sup)
        for name in plan.environments.removed:
            self.metrics.forget_environment(name)
        await self.sandbox_service.apply(new.environments, plan.environments)

    async def _serve_supervisor(
        self,
        sup: ResourceSupervisor,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one supervisor under a cancel scope of its own, so a reload can remove it."""
        with trio.CancelScope() as scope:
            self._scopes[sup.name] = scope
            await sup.serve(task_status=task_status)

    async def render_metrics(self) -> bytes:
        # A big page (tens of ms of GIL at 10k series) is reused by back-to-back scrapes
        # for up to a second while nothing happened on the bus; small pages never are
        # (counters such as config_reloads_total move without a bus event).
        key, now = self.bus.last_seq, trio.current_time()
        cached = self._metrics_page
        if cached is not None and cached[0] == key and now - cached[1] < METRICS_REUSE:
            return cached[2]
        page = await self.metrics.render(self.snapshots(), self.sandbox_service.stats())
        took = trio.current_time() - now
        self._metrics_page = (key, now, page) if took > METRICS_SLOW_RENDER else None
        return page

    # ------------------------------------------------------------------------ running

    def request_stop(self, *, force: bool = False) -> None:
        self._stop.set()
        if force:
            self._force.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until `request_stop()` (or a signal, see `serve_signals`)."""
        self.bus.add_listener(log_transition)
        self.bus.add_listener(self.metrics.observe_transition)
        daemon_config = self.config.daemon
        token = read_token(daemon_config.api_token_file)
        log.info(
            "daemon_starting",
            version=__version__,
            config=str(self.config_path) if self.config_path else "<embedded default>",
            resources=len(self.config.resources),
            environments=len(self.config.environments),
        )
        state = StateDir(daemon_config.state_path)
        state.open()
        try:
            await self._run(state, token, task_status)
        finally:
            state.close()
        log.info("daemon_stopped")
        self.notifier.close()

    async def _run(
        self, state: StateDir, token: bytes | None, task_status: trio.TaskStatus[None]
    ) -> None:
        daemon_config = self.config.daemon
        # Before anything starts: whatever a previous run left alive (if it died together
        # with its guardian) is stopped now.
        orphans = await reap_orphans(state)
        if orphans:
            self.metrics.orphans_reaped.labels("process").inc(len(orphans))
        log.info(
            "state_dir_ready",
            path=str(state.path),
            instance=state.instance_id,
            orphans_reaped=len(orphans),
        )
        async with open_local_launcher(state) as launcher, trio.open_nursery() as outer:
            # The API outlives supervision, so operators can watch the shutdown through it.
            self.api = await outer.start(
                partial(
                    serve_api,
                    self,
                    socket_path=daemon_config.socket_path,
                    http=daemon_config.http,
                    token=token,
                    limits=Limits(
                        connections=daemon_config.limits.connections,
                        streams=daemon_config.limits.streams,
                        header_timeout=daemon_config.limits.header_timeout,
                    ),
                )
            )
            self.api_bound.set()
            log.info(
                "api_listening",
                socket=str(self.api.socket_path),
                http="{}:{}".format(*self.api.http_address) if self.api.http_address else None,
                tcp_v1="enabled" if token else "disabled (no api_token_file)",
            )
            async with trio.open_nursery() as root:
                self._launcher, self._root = launcher, root
                launcher.withhold(self.config.secret_env_names())
                await root.start(self.loop.serve)
                self._engines = DockerEngines(root, state.instance_id)
                await self._engines_for(self.config, reap=True)
                self.supervisors = build_supervisors(
                    self.config,
                    launcher,
                    self.bus,
                    on_check=self.metrics.observe_check,
                    engines=self._engines,
                )
                started_at = trio.current_time()
                async with trio.open_nursery() as starters:
                    for sup in self.supervisors.values():
                        starters.start_soon(root.start, self._serve_supervisor, sup)
                    starters.start_soon(
                        root.start, self.sandbox_service.serve, self.config.environments
                    )
                root.start_soon(self.reloader.serve)
                self.ready.set()
                log.info(
                    "daemon_ready",
                    seconds=round(trio.current_time() - started_at, 3),
                    summary=self.summary(),
                )
                await self.notifier.send(READY=1, STATUS=self.status_line())
                freeze_heap()
                root.start_soon(self._serve_status)
                if (interval := watchdog_interval()) is not None:
                    await root.start(serve_watchdog, self.notifier, interval, self.health_problem)
                task_status.started()
                await self._stop.wait()
                await self.notifier.send(STOPPING=1, STATUS="stopping")
                await self._shutdown()
                root.cancel_scope.cancel()
            self.api.close()

    async def _engines_for(self, config: Config, *, reap: bool = False) -> None:
        """Open the Docker engines `config` uses; at start-up, reap the last run's leftovers.

        Containers of this instance that a previous run left behind are removed before
        anything starts, except those of `adopt = true` resources (taken over as they are).
        """
        assert self._engines is not None
        new = await self._engines.open_for(config.docker_hosts())
        if not reap:
            return
        for host in new:
            reaped: list[Any] = []
            with trio.move_on_after(REAP_TIMEOUT) as scope:
                try:
                    reaped = await self._engines.reap_orphans(host, adoptable(config))
                except DockerError as exc:
                    log.warning("orphan_reaping_skipped", host=host, error=str(exc))
            if scope.cancelled_caught:
                log.warning("orphan_reaping_skipped", host=host, error="the engine did not answer")
            if reaped:
                self.metrics.orphans_reaped.labels("container").inc(len(reaped))

    async def _shutdown(self) -> None:
        self._stopping = True
        timeout = self.config.daemon.shutdown_timeout
        log.info("daemon_stopping", timeout=timeout)
        with trio.move_on_after(timeout) as scope:
            await race(self._stop_everything, self._force.wait, self._extend_stop_timeout)
        if scope.cancelled_caught or self._force.is_set():
            left = [
                n
                for n, s in self.supervisors.items()
                if s.state not in (State.STOPPED, State.EXITED)
            ]
            log.warning("daemon_stop_forced", timed_out=scope.cancelled_caught, remaining=left)

    async def _stop_everything(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_in_order, self.supervisors)
            nursery.start_soon(self.sandbox_service.stop)

    async def _extend_stop_timeout(self) -> None:
        """While the shutdown makes progress, ask systemd for more time (never returns).

        Progress means no resource is stuck past its own stop deadline and the loop is
        responsive (`health_problem`); the shutdown as a whole is bounded by
        `shutdown_timeout` anyway.
        """
        while True:
            await trio.sleep(EXTEND_EVERY)
            if self.health_problem() is None:
                await self.notifier.send(EXTEND_TIMEOUT_USEC=int(2 * EXTEND_EVERY * 1e6))
                await self.notifier.status(f"stopping: {self.summary()}")

    async def _serve_status(self) -> None:
        """Keep systemd's STATUS= line current, at most once a second."""
        self.bus.add_listener(lambda _: self._status_dirty.set())
        while True:
            await self._status_dirty.wait()
            self._status_dirty = trio.Event()
            await self.notifier.status(self.status_line())
            await trio.sleep(1.0)

    def status_line(self) -> str:
        """The STATUS= line: the summary, and a failed reload if the last one failed."""
        return "; ".join(p for p in (self.summary(), self.reloader.failure) if p)

    def health_problem(self) -> str | None:
        """Why the watchdog should not be petted now, or None if all is well."""
        return health_problem(self.loop, self.supervisors.values(), WATCHDOG_MAX_LAG, STUCK_MARGIN)

    def summary(self) -> str:
        """One line: resources in each notable state, environments online, sessions."""
        return summary(self.supervisors.values(), self.sandbox_service.stats())

    async def serve_signals(self) -> None:
        """SIGTERM/SIGINT stop (a second SIGINT forces); SIGHUP reloads; SIGUSR1 logs status."""
        await serve_signals(self)

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def dump_state(self) -> None:
        """Log the status of every resource and environment (SIGUSR1)."""
        for env in self.sandbox_service.stats():
            log.info(
                "environment_status",
                **{k: v for k, v in env.items() if k != "name"},
                environment=env["name"],
            )
        for sup in self.supervisors.values():
            snap = sup.snapshot()
            log.info(
                "resource_status",
                resource=snap.name,
                state=snap.state.value,
                liveness=snap.liveness.value,
                pid=snap.pid,
                restarts=snap.restarts,
                detail=snap.detail,
            )


async def run_daemon(config: Config, *, config_path: Path | None = None) -> None:
    """Run the daemon with signal handling until it is told to stop."""
    daemon = Daemon(config, config_path=config_path, loader=None if config_path else load_default)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon.serve_signals)
        await daemon.run()
        nursery.cancel_scope.cancel()
