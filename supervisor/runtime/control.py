"""The API's view of the daemon (`api.app.Control`): a thin face over its owners.

Also where a slow `/metrics` page is kept for reuse: a page of tens of thousands of
series takes tens of ms of GIL, so back-to-back scrapes within a second get the same
page while nothing happened on the bus; small pages never are (counters such as
config_reloads_total move without a bus event).
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from supervisor.errors import DaemonStoppingError
from supervisor.observability.glance import MinuteRing
from supervisor.observability.metrics import Metrics
from supervisor.runtime.lifecycle import Lifecycle
from supervisor.runtime.reload import Reloader
from supervisor.runtime.resources import ResourceSet
from supervisor.sandbox.service import SandboxService
from supervisor.supervision.bus import EventBus
from supervisor.supervision.resource import OutputSource
from supervisor.supervision.settings import Snapshot

METRICS_REUSE = 1.0  # seconds a slow /metrics page may be served again
METRICS_SLOW_RENDER = 0.02  # what counts as slow


class ControlSurface:
    """Implements the API's `Control` protocol."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        bus: EventBus,
        resources: ResourceSet,
        sandboxes: SandboxService,
        reloader: Reloader,
        metrics: Metrics,
        glance: MinuteRing,
    ) -> None:
        self._lifecycle = lifecycle
        self._bus = bus
        self._resources = resources
        self._sandboxes = sandboxes
        self._reloader = reloader
        self._metrics = metrics
        self._glance = glance
        self._page: tuple[int, float, bytes] | None = None  # (bus seq, time, page)

    @property
    def is_ready(self) -> bool:
        return self._lifecycle.ready.is_set()

    @property
    def is_stopping(self) -> bool:
        return self._lifecycle.stopping

    @property
    def events(self) -> EventBus:
        return self._bus

    @property
    def sandboxes(self) -> SandboxService:
        return self._sandboxes

    def snapshots(self) -> list[Snapshot]:
        return self._resources.snapshots()

    def credentials(self, name: str) -> dict[str, Any]:
        return self._resources.credentials(name)

    def output(self, name: str) -> OutputSource:
        return self._resources.get(name).resource.output()

    def groups(self) -> Mapping[str, Sequence[str]]:
        return self._resources.groups

    def signal(self, name: str, signum: signal.Signals) -> Snapshot:
        return self._resources.signal(name, signum)

    def command(self, name: str, action: str) -> Snapshot:
        if self._lifecycle.stopping:  # what it would start, the shutdown would not stop
            raise DaemonStoppingError("the daemon is stopping")
        return self._resources.command(name, action)

    def glance(self) -> list[dict[str, Any]]:
        return [minute.to_json() for minute in self._glance.series()]

    async def reload(self, *, dry_run: bool, plan: str | None = None) -> dict[str, Any]:
        return await self._reloader.reload(dry_run=dry_run, plan=plan)

    async def render_metrics(self) -> bytes:
        key, now = self._bus.last_seq, trio.current_time()
        cached = self._page
        if cached is not None and cached[0] == key and now - cached[1] < METRICS_REUSE:
            return cached[2]
        page = await self._metrics.render(self.snapshots(), self._sandboxes.stats())
        took = trio.current_time() - now
        self._page = (key, now, page) if took > METRICS_SLOW_RENDER else None
        return page
