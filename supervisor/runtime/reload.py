"""Live reload: one mechanism behind SIGHUP, `supervisor reload` and `POST /v1/reload`.

Reloads are serialized; a burst of requests (SIGHUPs) coalesces into one pending reload;
an invalid config is refused before anything changes, and the daemon says so in its
status line until a reload succeeds. The reloader owns the running config; what a valid
config changes is its `Target`'s job (`runtime.apply`); this module owns the when and the
reporting.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
import trio

from supervisor.config.diff import ReloadPlan, plan_digest, plan_reload
from supervisor.config.schema import Config
from supervisor.errors import ConfigError, PlanChangedError, ReloadUnavailableError
from supervisor.observability.metrics import Metrics
from supervisor.runtime.lifecycle import Lifecycle
from supervisor.runtime.systemd import Notifier

log = structlog.get_logger("supervisor.daemon")


class Target(Protocol):
    """What a reload changes."""

    def check(self, new: Config, plan: ReloadPlan) -> None:
        """Raise ConfigError if `new` cannot be applied (before anything changes)."""

    async def apply(self, old: Config, new: Config, plan: ReloadPlan) -> None:
        """Make the running daemon match `new`, touching only what `plan` names."""


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
    """Owns the running config; reads it again (through `loader`) and has `target` apply
    the difference."""

    def __init__(
        self,
        config: Config,
        loader: Callable[[], Config] | None,
        *,
        lifecycle: Lifecycle,
        notifier: Notifier,
        metrics: Metrics,
        status: Callable[[], str],
    ) -> None:
        self.config = config
        self._target: Target | None = None
        self._loader = loader
        self._lifecycle = lifecycle
        self._notifier = notifier
        self._metrics = metrics
        self._status = status
        self._lock = trio.Lock()
        self._wanted = trio.Event()
        self.failure = ""  # for the status line, until a reload succeeds

    def attach(self, target: Target) -> None:
        """What reloads change, once the daemon has built it (before it is ready)."""
        self._target = target

    def request(self) -> None:
        """Reload soon (SIGHUP); a burst of requests coalesces into one pending reload."""
        self._wanted.set()

    async def serve(self) -> None:
        """Carry out requested reloads until cancelled."""
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            if self._lifecycle.stopping:  # what a reload would start, shutdown would not stop
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
                self._metrics.config_reloads.labels("failure").inc()
                self.failure = "reload failed unexpectedly (see the log)"
                await self._notifier.send(READY=1, STATUS=self._status())

    def _read(self) -> Config:
        if self._loader is None:
            raise ReloadUnavailableError(
                "this daemon was given a config object, not a file: nothing to reload"
            )
        return self._loader()

    async def reload(self, *, dry_run: bool, plan: str | None = None) -> dict[str, Any]:
        """Re-read the config and apply what changed (the plan, as JSON, with the `hash`
        of the two configs it was made from).

        Raises:
            ConfigError: the config is invalid; the running config is untouched.
            PlanChangedError: `plan` is not this plan's hash (the file or the running
                config changed since that plan was made); nothing is applied.
        """
        await self._lifecycle.ready.wait()
        target = self._target
        assert target is not None  # attached before the daemon is ready
        async with self._lock:
            started = trio.current_time()
            if not dry_run:
                await self._notifier.reloading()
            try:
                # Abandoned on cancel: a read that hangs (a file on a dead mount) must not
                # hold up the daemon's shutdown.
                new = await trio.to_thread.run_sync(self._read, abandon_on_cancel=True)
                changes = plan_reload(self.config, new)
                digest = plan_digest(self.config, new)
                if plan is not None and plan != digest:
                    raise PlanChangedError(
                        "the config changed since that plan was made: review the new plan "
                        "(a dry run) and apply that one"
                    )
                target.check(new, changes)
            except ConfigError as exc:
                if not dry_run:
                    await self._refused(exc)
                raise
            except (ReloadUnavailableError, PlanChangedError):
                if not dry_run:
                    await self._notifier.send(READY=1)
                raise
            if not dry_run:
                old, self.config = self.config, new
                await target.apply(old, new, changes)
                self.failure = ""
                freeze_heap()
                await self._notifier.send(READY=1, STATUS=self._status())
                self._metrics.config_reloads.labels("success").inc()
                self._metrics.config_last_reload_success.set(time.time())
                if changes.daemon_restart_needed:
                    log.warning(
                        "config_reload_partial",
                        keys=[f"daemon.{k}" for k in changes.daemon_restart_needed],
                        detail="these take effect when the daemon restarts",
                    )
                log.info(
                    "config_reloaded",
                    plan=changes.summary(),
                    seconds=round(trio.current_time() - started, 4),
                )
            return {"dry_run": dry_run, **changes.to_json(), "hash": digest}

    async def _refused(self, exc: ConfigError) -> None:
        self._metrics.config_reloads.labels("failure").inc()
        log.error(
            "config_reload_failed",
            source=exc.source,
            problems=[str(p) for p in exc.problems],
            detail="still running on the previous config",
        )
        self.failure = (
            f"reload failed ({len(exc.problems)} problem(s)), running on the previous config"
        )
        await self._notifier.send(READY=1, STATUS=self._status())
