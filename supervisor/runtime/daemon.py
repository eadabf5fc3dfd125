"""The composition root: builds everything from a Config and runs it until told to stop.

Start-up: the launcher (and its forking thread) opens first and closes last, so every
child it started is killed and reaped even if everything above it fails. All resources
start concurrently; each waits for its `depends_on` to be RUNNING, and the daemon is
ready once every one of them has made its first start attempt.

Shutdown (SIGTERM or SIGINT): each resource stops after everything that depends on it has
stopped, all within `shutdown_timeout`; whatever is still up then is killed. A second
SIGINT skips the graceful part.

Behaviour lives in what this builds: `ResourceSet` (the supervisors), `SandboxService`
(the environments), `Reloader` + `ConfigApplier` (reloads), `ControlSurface` (the API's
view), `Lifecycle` (ready, stopping).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import structlog
import trio
from prometheus_client import CollectorRegistry

from supervisor import __version__
from supervisor.api.access import Tokens
from supervisor.api.edge import Limits
from supervisor.api.server import ApiServer, Mounts, serve_api
from supervisor.config.load import load_default, load_file
from supervisor.config.schema import Config
from supervisor.launchers.docker import DockerEngines, DockerError, OwnedContainer, TLSFiles
from supervisor.launchers.local import LocalLauncher, open_local_launcher
from supervisor.observability.glance import MinuteRing
from supervisor.observability.health import health_problem, summary
from supervisor.observability.logging import log_transition
from supervisor.observability.loop import LoopMonitor
from supervisor.observability.metrics import Metrics
from supervisor.runtime.apply import ConfigApplier
from supervisor.runtime.build import generate_token, make_environment, read_tokens, tls_context
from supervisor.runtime.control import ControlSurface
from supervisor.runtime.kinds import Context
from supervisor.runtime.lifecycle import Lifecycle
from supervisor.runtime.mcp import open_mcp_routes
from supervisor.runtime.reload import Reloader, freeze_heap
from supervisor.runtime.resources import ResourceSet
from supervisor.runtime.signals import serve_signals
from supervisor.runtime.state_dir import StateDir, reap_orphans
from supervisor.runtime.systemd import Notifier, serve_status, serve_watchdog, watchdog_interval
from supervisor.sandbox.environment import Environment
from supervisor.sandbox.service import SandboxService
from supervisor.supervision.bus import EventBus
from supervisor.supervision.concurrency import race
from supervisor.supervision.states import State
from supervisor.supervision.supervisor import ResourceSupervisor

log = structlog.get_logger("supervisor.daemon")

EXTEND_EVERY = 5.0  # seconds between EXTEND_TIMEOUT_USEC messages during a slow shutdown
WATCHDOG_MAX_LAG = 5.0  # a loop this late is not petting the watchdog
STUCK_MARGIN = 30.0  # past its own timeout plus this, a STARTING/STOPPING resource is wedged
REAP_TIMEOUT = 10.0  # an engine that does not answer is not waited for at start-up


class Daemon:
    """Runs one config: the API, resources under supervision, orderly shutdown."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        registry: CollectorRegistry | None = None,
        event_history: int = 10_000,
        loader: Callable[[], Config] | None = None,
    ) -> None:
        self.config_path = config_path
        self.lifecycle = Lifecycle()
        self.bus = EventBus(history=event_history)
        self.metrics = Metrics(registry)
        self.loop = LoopMonitor(on_sample=self.metrics.loop_lag.set)
        self.notifier = Notifier()
        self.resources = ResourceSet(self.bus, self.metrics.observe_check)
        self.sandbox_service = SandboxService(
            self._make_environment, config.defaults.restart, self.bus
        )
        # Where a reload reads the config from: the file, or what the caller says.
        self.reloader = Reloader(
            config,
            loader or (partial(load_file, config_path) if config_path else None),
            lifecycle=self.lifecycle,
            notifier=self.notifier,
            metrics=self.metrics,
            status=self.status_line,
        )
        self.glance = MinuteRing(self.resources.census)
        self.control = ControlSurface(
            self.lifecycle,
            bus=self.bus,
            resources=self.resources,
            sandboxes=self.sandbox_service,
            reloader=self.reloader,
            metrics=self.metrics,
            glance=self.glance,
        )
        self.api: ApiServer | None = None
        self.api_bound = trio.Event()
        self.engines: DockerEngines | None = None
        self._launcher: LocalLauncher | None = None
        self._instance_id = ""  # the state directory's, once it is open

    @property
    def config(self) -> Config:
        """The running config (it changes with every applied reload)."""
        return self.reloader.config

    @property
    def supervisors(self) -> dict[str, ResourceSupervisor]:
        return self.resources.supervisors

    @property
    def ready(self) -> trio.Event:
        return self.lifecycle.ready

    def _context(self) -> Context:
        assert self._launcher is not None
        config = self.config
        return Context(
            self._launcher,
            self.engines,
            config.daemon.state_path,
            log_path=config.daemon.log_path,
            log_defaults=config.defaults.log,
            resource_configs=config.resources,
            instance=self._instance_id,
        )

    def _make_environment(self, name: str, config: Any) -> Environment:
        return make_environment(name, config, self._context(), self.bus)

    async def reload(self, *, dry_run: bool, plan: str | None = None) -> dict[str, Any]:
        """Re-read the config and apply what changed (ConfigError if it is invalid)."""
        return await self.reloader.reload(dry_run=dry_run, plan=plan)

    # ------------------------------------------------------------------- signal target

    @property
    def stop_requested(self) -> bool:
        return self.lifecycle.stop_requested.is_set()

    def request_stop(self, *, force: bool = False) -> None:
        self.lifecycle.request_stop(force=force)

    def request_reload(self) -> None:
        """Reload soon (SIGHUP); a burst of requests coalesces into one pending reload."""
        self.reloader.request()

    async def serve_signals(self) -> None:
        """SIGTERM/SIGINT stop (a second SIGINT forces); SIGHUP reloads; SIGUSR1 logs status."""
        await serve_signals(self)

    # ------------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until `request_stop()` (or a signal, see `serve_signals`)."""
        self.bus.add_listener(log_transition)
        self.bus.add_listener(self.metrics.observe_transition)
        self.bus.add_listener(self.glance.observe)
        tls = tls_context(self.config.daemon)
        log.info(
            "daemon_starting",
            version=__version__,
            config=str(self.config_path) if self.config_path else "<embedded default>",
            resources=len(self.config.resources),
            environments=len(self.config.environments),
        )
        state = StateDir(self.config.daemon.state_path)
        state.open()
        try:
            # After the state directory: a generated token lives there.
            generated = generate_token(self.config.daemon)
            if generated is not None:
                log.info("api_token_file", path=str(generated), generated=True)
            tokens = read_tokens(self.config.daemon)
            await self._run(state, tokens, tls, task_status)
        finally:
            state.close()
        log.info("daemon_stopped")
        self.notifier.close()

    async def _run(
        self,
        state: StateDir,
        tokens: Tokens,
        tls: ssl.SSLContext | None,
        task_status: trio.TaskStatus[None],
    ) -> None:
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
        async with (
            open_local_launcher(state) as launcher,
            open_mcp_routes(self.config) as mcp_routes,
            trio.open_nursery() as outer,
        ):
            # The API outlives supervision, so operators can watch the shutdown through it.
            self.api = await outer.start(self._serve_api, tokens, tls, mcp_routes)
            self.api_bound.set()
            log.info(
                "api_listening",
                socket=str(self.api.socket_path),
                http="{}:{}".format(*self.api.http_address) if self.api.http_address else None,
                tcp_v1="enabled" if tokens.full else "disabled (no api_token_file)",
                console=self._console_url(tokens),
                token_file=str(self.config.daemon.token_path) if tokens.full else None,
                tcp_read_only="enabled" if tokens.read else "disabled",
                tls=tls is not None,
            )
            async with trio.open_nursery() as root:
                self._launcher = launcher
                self._instance_id = state.instance_id
                launcher.withhold(self.config.secret_env_names())
                await root.start(self.loop.serve)
                await root.start(self.glance.serve)
                self.engines = DockerEngines(root, state.instance_id)
                await self._open_engines(self.config, reap=True)
                started_at = trio.current_time()
                async with trio.open_nursery() as starters:
                    starters.start_soon(self.resources.start, self.config, self._context(), root)
                    starters.start_soon(
                        root.start, self.sandbox_service.serve, self.config.environments
                    )
                self.reloader.attach(
                    ConfigApplier(
                        self.resources,
                        self.sandbox_service,
                        launcher=launcher,
                        metrics=self.metrics,
                        open_engines=self._open_engines,
                        context=self._context,
                    )
                )
                root.start_soon(self.reloader.serve)
                self.lifecycle.ready.set()
                log.info(
                    "daemon_ready",
                    seconds=round(trio.current_time() - started_at, 3),
                    summary=self.summary(),
                )
                await self.notifier.send(READY=1, STATUS=self.status_line())
                freeze_heap()
                root.start_soon(serve_status, self.notifier, self.bus, self.status_line)
                if (interval := watchdog_interval()) is not None:
                    await root.start(serve_watchdog, self.notifier, interval, self.health_problem)
                task_status.started()
                await self.lifecycle.stop_requested.wait()
                await self.notifier.send(STOPPING=1, STATUS="stopping")
                await self._shutdown()
                root.cancel_scope.cancel()
            self.api.close()

    def _console_url(self, tokens: Tokens) -> str | None:
        """Where the web console is, when it can be signed in to."""
        if self.api is None or self.api.http_address is None or tokens.full is None:
            return None
        host, port = self.api.http_address
        scheme = "https" if self.config.daemon.tls is not None else "http"
        return f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}/"

    async def _serve_api(
        self,
        tokens: Tokens,
        tls: ssl.SSLContext | None,
        mounts: Mounts | None,
        *,
        task_status: trio.TaskStatus[ApiServer],
    ) -> None:
        daemon = self.config.daemon
        limits = Limits(
            connections=daemon.limits.connections,
            streams=daemon.limits.streams,
            header_timeout=daemon.limits.header_timeout,
        )
        await serve_api(
            self.control,
            socket_path=daemon.socket_path,
            http=daemon.http,
            tokens=tokens,
            tls=tls,
            limits=limits,
            tcp_mounts=mounts,
            task_status=task_status,
        )

    async def _open_engines(self, config: Config, *, reap: bool = False) -> None:
        """Open the Docker engines `config` uses; at start-up, reap the last run's leftovers.

        Containers of this instance that a previous run left behind are removed before
        anything starts, except those of `adopt = true` resources (taken over as they are).
        """
        assert self.engines is not None
        tls = {
            host: TLSFiles(str(t.cert), str(t.key), str(t.ca) if t.ca else None)
            for host, t in config.docker_tls().items()
        }
        new = await self.engines.open_for(config.docker_hosts(), tls)
        if not reap:
            return
        # By name: one engine can be reached under several host strings.
        adopt = {name for name, spec in config.resources.items() if spec.adoptable()}

        def adoptable(container: OwnedContainer) -> bool:
            return container.resource in adopt

        for host in new:
            reaped: list[Any] = []
            with trio.move_on_after(REAP_TIMEOUT) as scope:
                try:
                    reaped = await self.engines.reap_orphans(host, adoptable)
                except DockerError as exc:
                    log.warning("orphan_reaping_skipped", host=host, error=str(exc))
            if scope.cancelled_caught:
                log.warning("orphan_reaping_skipped", host=host, error="the engine did not answer")
            if reaped:
                self.metrics.orphans_reaped.labels("container").inc(len(reaped))

    async def _shutdown(self) -> None:
        self.lifecycle.stopping = True
        timeout = self.config.daemon.shutdown_timeout
        log.info("daemon_stopping", timeout=timeout)
        with trio.move_on_after(timeout) as scope:
            await race(self._stop_everything, self.lifecycle.forced.wait, self._extend_stop_timeout)
        if scope.cancelled_caught or self.lifecycle.forced.is_set():
            left = [
                n
                for n, s in self.supervisors.items()
                if s.state not in (State.STOPPED, State.EXITED)
            ]
            log.warning("daemon_stop_forced", timed_out=scope.cancelled_caught, remaining=left)

    async def _stop_everything(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.resources.stop)
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

    # ------------------------------------------------------------------------- status

    def status_line(self) -> str:
        """The STATUS= line: the summary, and a failed reload if the last one failed."""
        return "; ".join(p for p in (self.summary(), self.reloader.failure) if p)

    def health_problem(self) -> str | None:
        """Why the watchdog should not be petted now, or None if all is well."""
        return health_problem(self.loop, self.supervisors.values(), WATCHDOG_MAX_LAG, STUCK_MARGIN)

    def summary(self) -> str:
        """One line: resources in each notable state, environments online, sessions."""
        return summary(self.supervisors.values(), self.sandbox_service.stats())

    def dump_state(self) -> None:
        """Log the status of every resource and environment (SIGUSR1)."""
        for env in self.sandbox_service.stats():
            log.info(
                "environment_status",
                **{k: v for k, v in env.items() if k != "name"},
                environment=env["name"],
            )
        for snap in self.resources.snapshots():
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
