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

import random
import signal
from collections.abc import Mapping
from pathlib import Path

import structlog
import trio

from supervisor import __version__
from supervisor.config.schema import Config
from supervisor.launchers.local import LocalLauncher, open_local_launcher
from supervisor.observability.logging import log_transition
from supervisor.resources.process import ProcessResource
from supervisor.supervision.bus import EventBus
from supervisor.supervision.states import State
from supervisor.supervision.supervisor import ResourceSupervisor, Settings, race

log = structlog.get_logger("supervisor.daemon")


def build_supervisors(
    config: Config, launcher: LocalLauncher, bus: EventBus, rng: random.Random | None = None
) -> dict[str, ResourceSupervisor]:
    """One supervisor per resource, in start order, wired to its dependencies."""
    supervisors: dict[str, ResourceSupervisor] = {}
    for name in config.start_order():
        spec = config.resources[name]
        supervisors[name] = ResourceSupervisor(
            name,
            ProcessResource(name, spec, launcher),
            Settings(
                restart=config.restart_for(name),
                start_timeout=spec.start_timeout,
                stop_timeout=spec.stop_timeout,
                autostart=spec.autostart,
            ),
            bus=bus,
            depends_on=[supervisors[d] for d in spec.depends_on],
            rng=rng,
        )
    return supervisors


async def stop_in_order(supervisors: Mapping[str, ResourceSupervisor]) -> None:
    """Stop every resource after all of its dependents are down, concurrently otherwise."""
    done = {name: trio.Event() for name in supervisors}
    dependents: dict[str, list[str]] = {name: [] for name in supervisors}
    for name, sup in supervisors.items():
        for dep in sup.depends_on:
            dependents[dep.name].append(name)

    async def stop_one(name: str) -> None:
        for dependent in dependents[name]:
            await done[dependent].wait()
        await supervisors[name].stop_and_wait()
        done[name].set()

    async with trio.open_nursery() as nursery:
        for name in supervisors:
            nursery.start_soon(stop_one, name)


class Daemon:
    """Runs one config: resources under supervision, signals, orderly shutdown."""

    def __init__(self, config: Config, *, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.bus = EventBus()
        self.supervisors: dict[str, ResourceSupervisor] = {}
        self.ready = trio.Event()
        self._stop = trio.Event()
        self._force = trio.Event()

    def request_stop(self, *, force: bool = False) -> None:
        self._stop.set()
        if force:
            self._force.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until `request_stop()` (or a signal, see `serve_signals`)."""
        self.bus.add_listener(log_transition)
        log.info(
            "daemon_starting",
            version=__version__,
            config=str(self.config_path) if self.config_path else "<embedded default>",
            resources=len(self.config.resources),
        )
        for name in self.config.environments:
            log.warning(
                "environment_not_served",
                environment=name,
                detail="sandbox environments are not served by this release yet",
            )
        async with open_local_launcher() as launcher:
            self.supervisors = build_supervisors(self.config, launcher, self.bus)
            async with trio.open_nursery() as root:
                started_at = trio.current_time()
                async with trio.open_nursery() as starters:
                    for sup in self.supervisors.values():
                        starters.start_soon(root.start, sup.serve)
                self.ready.set()
                log.info(
                    "daemon_ready",
                    seconds=round(trio.current_time() - started_at, 3),
                    summary=self.summary(),
                )
                task_status.started()
                await self._stop.wait()
                await self._shutdown()
                root.cancel_scope.cancel()
        log.info("daemon_stopped")

    async def _shutdown(self) -> None:
        timeout = self.config.daemon.shutdown_timeout
        log.info("daemon_stopping", timeout=timeout)
        with trio.move_on_after(timeout) as scope:
            await race(lambda: stop_in_order(self.supervisors), self._force.wait)
        if scope.cancelled_caught or self._force.is_set():
            left = [
                n
                for n, s in self.supervisors.items()
                if s.state not in (State.STOPPED, State.EXITED)
            ]
            log.warning("daemon_stop_forced", timed_out=scope.cancelled_caught, remaining=left)

    def summary(self) -> str:
        """One line: how many resources are in each notable state."""
        counts = dict.fromkeys((State.RUNNING, State.STARTING, State.BACKOFF, State.FATAL), 0)
        for sup in self.supervisors.values():
            counts[sup.state] = counts.get(sup.state, 0) + 1
        parts = [
            f"{n} {s.value.lower()}"
            for s, n in counts.items()
            if n or s in (State.RUNNING, State.FATAL)
        ]
        return ", ".join(parts)

    async def serve_signals(self) -> None:
        """SIGTERM/SIGINT stop; a second SIGINT forces; SIGUSR1 logs every resource."""
        with trio.open_signal_receiver(
            signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1
        ) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum in (signal.SIGTERM, signal.SIGINT):
                    force = self._stop.is_set() and signum == signal.SIGINT
                    log.info(
                        "signal_received", signal=name, action="force stop" if force else "stop"
                    )
                    self.request_stop(force=force)
                elif signum == signal.SIGHUP:
                    log.warning(
                        "signal_received",
                        signal=name,
                        action="none",
                        detail="live reload is not available in this release; restart the daemon to apply config changes",
                    )
                else:
                    self.dump_state()

    def dump_state(self) -> None:
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
    daemon = Daemon(config, config_path=config_path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon.serve_signals)
        await daemon.run()
        nursery.cancel_scope.cancel()
