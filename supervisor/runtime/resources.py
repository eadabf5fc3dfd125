"""The daemon's resources: one supervisor each, served as one task of the daemon's
nursery, changed only through reload plans and operator verbs.

A reload asks each supervisor to change itself (`replace`, `reconfigure`, `depend_on`);
nothing here assigns another object's fields.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from functools import partial

import structlog
import trio

from supervisor.config.diff import ReloadPlan
from supervisor.config.schema import Config
from supervisor.config.selection import did_you_mean
from supervisor.errors import ConflictError, NotRunningError, ResourceNotFoundError
from supervisor.runtime.build import (
    build_supervisors,
    make_resource,
    make_supervisor,
    settings_for,
    stop_in_order,
)
from supervisor.runtime.kinds import Context
from supervisor.supervision.bus import EventBus
from supervisor.supervision.settings import Snapshot
from supervisor.supervision.states import State
from supervisor.supervision.supervisor import ResourceSupervisor

log = structlog.get_logger("supervisor.daemon")

ACTIONS = ("start", "stop", "restart")


class ResourceSet:
    """Every supervised resource of the daemon, by name, in start order."""

    def __init__(self, bus: EventBus, on_check: Callable[[str, float], None] | None) -> None:
        self._bus = bus
        self._on_check = on_check
        self.supervisors: dict[str, ResourceSupervisor] = {}
        self.groups: dict[str, list[str]] = {}  # of the config the resources run
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------------ queries

    def get(self, name: str) -> ResourceSupervisor:
        try:
            return self.supervisors[name]
        except KeyError:
            hint = did_you_mean(name, list(self.supervisors), self.groups)
            raise ResourceNotFoundError(f"no resource named {name[:100]!r}{hint}") from None

    def snapshots(self) -> list[Snapshot]:
        return [sup.snapshot() for sup in self.supervisors.values()]

    def census(self) -> dict[str, int]:
        """How many resources are in each state now."""
        counts: dict[str, int] = {}
        for sup in self.supervisors.values():
            state = sup.state.value
            counts[state] = counts.get(state, 0) + 1
        return counts

    def credentials(self, name: str) -> dict[str, object]:
        return self.get(name).resource.credentials()

    def command(self, name: str, action: str) -> Snapshot:
        """Apply an operator verb (`ACTIONS`) to `name`."""
        sup = self.get(name)
        {"start": sup.start, "stop": sup.stop, "restart": sup.restart}[action]()
        log.info("operator_command", resource=name, action=action)
        return sup.snapshot()

    def signal(self, name: str, signum: signal.Signals) -> Snapshot:
        """Send `signum` to the process of `name` (not its group: supervisord's `signal`).

        Raises:
            NotRunningError: it has no live process now.
            ConflictError: its kind has no process of ours to signal (a container).
        """
        snap = self.get(name).snapshot()
        if snap.state not in (State.STARTING, State.RUNNING) or (
            snap.pid is None and snap.ident is None
        ):
            raise NotRunningError(f"{name} is {snap.state.value}: there is no process to signal")
        if snap.pid is None:
            raise ConflictError(f"{name} is a {snap.kind} resource: only processes take signals")
        # The pid cannot be reused under us: the daemon reaps its children itself, and the
        # snapshot shows a pid only while its handle is live.
        try:
            os.kill(snap.pid, signum)
        except ProcessLookupError:
            raise NotRunningError(
                f"{name} has just exited: there is no process to signal"
            ) from None
        log.info("operator_signal", resource=name, signal=signum.name, pid=snap.pid)
        return snap

    # --------------------------------------------------------------------------- life

    async def start(self, config: Config, ctx: Context, nursery: trio.Nursery) -> None:
        """Build every resource and serve it in `nursery`; returns once each has made its
        first start attempt (they start concurrently, each after its dependencies)."""
        self._nursery = nursery
        self.groups = dict(config.groups)
        self.supervisors = build_supervisors(config, ctx, self._bus, on_check=self._on_check)
        await self._serve_all(list(self.supervisors.values()))

    async def apply(self, new: Config, plan: ReloadPlan, ctx: Context) -> list[tuple[str, str]]:
        """Make the resources match `new`, touching only what `plan` names; returns the
        (name, kind) of those removed."""
        removed = {name: self.supervisors[name] for name in plan.removed}
        await stop_in_order(removed)
        for sup in removed.values():
            sup.retire()
        existing = {n: s for n, s in self.supervisors.items() if n not in removed}
        added = []
        # One pass in start order: an added or rebuilt resource finds what it depends on
        # (an Enterprise session its factory), whether that is new, rebuilt or kept.
        for name in new.start_order():
            if name in plan.added:
                existing[name] = make_supervisor(
                    name, new, ctx, self._bus, existing, on_check=self._on_check
                )
                added.append(existing[name])
            elif name in plan.restarted:
                resource = make_resource(name, new, ctx, existing)
                existing[name].replace(resource, settings_for(new, name))
        for name in plan.updated:
            existing[name].reconfigure(new.resources[name], settings_for(new, name))
        for name, sup in existing.items():
            sup.depend_on([existing[d] for d in new.resources[name].depends_on])
        self.supervisors = {name: existing[name] for name in new.start_order()}
        self.groups = dict(new.groups)
        await self._serve_all(added)
        return [(name, sup.resource.kind) for name, sup in removed.items()]

    async def stop(self) -> None:
        """Stop everything, dependents before what they depend on."""
        await stop_in_order(self.supervisors)

    async def _serve_all(self, supervisors: list[ResourceSupervisor]) -> None:
        """Serve each in the daemon's nursery; returns once each made its first attempt.

        Not through `nursery.start()`: that keeps a starter task and a nursery per
        resource alive through the start-up, and 1,000 of them at once left their freed
        heap behind (a few KB per resource of resident memory).
        """
        assert self._nursery is not None
        if not supervisors:
            return
        first_attempts = _FirstAttempts(len(supervisors))
        for sup in supervisors:
            self._nursery.start_soon(partial(sup.serve, task_status=first_attempts))
        await first_attempts.all.wait()


class _FirstAttempts:
    """A `TaskStatus` shared by the supervisors served together: `all` is set once each
    has called `started()`."""

    __slots__ = ("_left", "all")

    def __init__(self, count: int) -> None:
        self._left = count
        self.all = trio.Event()

    def started(self, value: None = None) -> None:
        self._left -= 1
        if self._left == 0:
            self.all.set()
