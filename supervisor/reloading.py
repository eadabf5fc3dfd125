"""Live reload: one mechanism behind SIGHUP, `supervisor reload` and `POST /v1/reload`.

Reloads are serialized; a burst of requests (SIGHUPs) coalesces into one pending reload;
an invalid config is refused before anything changes, and the daemon says so in its
status line until a reload succeeds. What a valid config changes is the daemon's job
(`Reloadable.apply`); this module owns the when and the reporting.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
import trio

from supervisor.config.diff import ReloadPlan, plan_reload
from supervisor.config.schema import Config
from supervisor.errors import ConfigError, ReloadUnavailableError
from supervisor.observability.metrics import Metrics
from supervisor.systemd import Notifier

log = structlog.get_logger("supervisor.daemon")


class Reloadable(Protocol):
    """The daemon, as a reload sees it."""

    config: Config
    ready: trio.Event
    notifier: Notifier
    metrics: Metrics

    @property
    def is_stopping(self) -> bool: ...
    def check_config(self, new: Config, plan: ReloadPlan) -> None:
        """Raise ConfigError if `new` cannot be applied (before anything changes)."""

    async def apply_config(self, new: Config, plan: ReloadPlan) -> None: ...
    def status_line(self) -> str: ...


def freeze_heap() -> None:
    """Move everything alive now out of the collector's reach.

    What exists after start-up (or a reload) lives as long as the daemon; with 10,000
    sandboxes a full collection walked it all for ~0.5 s, stalling every task, and freed
    nothing (measured in bench/scrape.py).
    """
    gc.unfreeze()  # what a reload dropped must be collectable again
    gc.collect()
    gc.freeze()


class Reloader:
    """Reads the config again (through `loader`) and has `daemon` apply the difference."""

    def __init__(self, daemon: Reloadable, loader: Callable[[], Config] | None) -> None:
        self._daemon = daemon
        self._loader = loader
        self._lock = trio.Lock()
        self._wanted = trio.Event()
        self.failure = ""  # for the status line, until a reload succeeds

    def request(self) -> None:
        """Reload soon (SIGHUP); a burst of requests coalesces into one pending reload."""
        self._wanted.set()

    async def serve(self) -> None:
        """Carry out requested reloads until cancelled."""
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            if self._daemon.is_stopping:  # what a reload would start, shutdown would not stop
                log.info("reload_ignored", detail="the daemon is stopping")
                continue
            try:
                await self.reload(dry_run=False)
            except ConfigError:
                pass  # logged and counted by reload()
            except ReloadUnavailableError as exc:
                log.warning("reload_unavailable", detail=str(exc))
            except Exception:
                # A bug must not take the daemon down with the reloader: count it, say so.
                log.exception("config_reload_crashed")
                self._daemon.metrics.config_reloads.labels("failure").inc()
                self.failure = "reload failed unexpectedly (see the log)"
                await self._daemon.notifier.send(READY=1, STATUS=self._daemon.status_line())

    def _read(self) -> Config:
        if self._loader is None:
            raise ReloadUnavailableError(
                "this daemon was given a config object, not a file: nothing to reload"
            )
        return self._loader()

    async def reload(self, *, dry_run: bool) -> dict[str, Any]:
        """Re-read the config and apply what changed (the plan, as JSON).

        Raises:
            ConfigError: the config is invalid; the running config is untouched.
        """
        daemon = self._daemon
        await daemon.ready.wait()
        async with self._lock:
            started = trio.current_time()
            if not dry_run:
                await daemon.notifier.reloading()
            try:
                new = await trio.to_thread.run_sync(self._read)
                plan = plan_reload(daemon.config, new)
                daemon.check_config(new, plan)
            except ConfigError as exc:
                if not dry_run:
                    await self._refused(exc)
                raise
            except ReloadUnavailableError:
                if not dry_run:
                    await daemon.notifier.send(READY=1)
                raise
            if not dry_run:
                await daemon.apply_config(new, plan)
                self.failure = ""
                freeze_heap()
                await daemon.notifier.send(READY=1, STATUS=daemon.status_line())
                daemon.metrics.config_reloads.labels("success").inc()
                daemon.metrics.config_last_reload_success.set(time.time())
                if plan.daemon_restart_needed:
                    log.warning(
                        "config_reload_partial",
                        keys=[f"daemon.{k}" for k in plan.daemon_restart_needed],
                        detail="these take effect when the daemon restarts",
                    )
                log.info(
                    "config_reloaded",
                    plan=plan.summary(),
                    seconds=round(trio.current_time() - started, 4),
                )
            return {"dry_run": dry_run, **plan.to_json()}

    async def _refused(self, exc: ConfigError) -> None:
        daemon = self._daemon
        daemon.metrics.config_reloads.labels("failure").inc()
        log.error(
            "config_reload_failed",
            source=exc.source,
            problems=[str(p) for p in exc.problems],
            detail="still running on the previous config",
        )
        self.failure = (
            f"reload failed ({len(exc.problems)} problem(s)), running on the previous config"
        )
        await daemon.notifier.send(READY=1, STATUS=daemon.status_line())
