"""How the supervisor loop waits: for a phase's outcome, or for an operator's command.

Split from supervisor.py (the state machine); `ResourceSupervisor` holds the fields named
here. A verb wakes the loop through `_wake`: it sets the poke event, and cancels the
scope of a wait that is awaiting a plain exit in the supervisor's own task.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from supervisor.supervision.resource import Handle


class Goal(enum.Enum):
    RUN = "run"
    STOP = "stop"


class Waits:
    """The waits of one supervisor loop (a base of `ResourceSupervisor`)."""

    __slots__ = ("_goal", "_interrupt", "_poke", "_restart_requested")
    _goal: Goal
    _restart_requested: bool
    _poke: trio.Event
    _interrupt: trio.CancelScope | None

    async def _until_exit_or_command(self, handle: Handle) -> tuple[str, Any]:
        """Await the exit in this very task, under a scope an operator verb cancels: most
        resources have no health check, and a nursery and watcher each cost ~2.5 KB."""
        while not self._commanded():
            with trio.CancelScope() as scope:
                self._interrupt = scope
                try:
                    termination = await handle.wait()
                finally:
                    self._interrupt = None
            if not scope.cancelled_caught:
                return ("exited", termination)
        return ("command", None)

    def _commanded(self) -> bool:
        return self._goal is Goal.STOP or self._restart_requested

    def _wake(self) -> None:
        """Wake the loop wherever it waits (an operator verb or new settings)."""
        self._poke.set()
        if self._interrupt is not None and self._commanded():
            self._interrupt.cancel()

    async def _until_outcome(
        self,
        work: Callable[[Callable[[tuple[str, Any]], None], trio.Nursery], Awaitable[None]],
    ) -> tuple[str, Any]:
        """Run `work` until it reports an outcome, or an operator asks to stop or restart.

        Everything reports through `finish`, which also wakes this loop through the poke
        event: one event and one nursery per phase keep a restart to a few scheduler
        rounds (see bench/: restart latency against a bare trio loop).
        """
        outcome: list[tuple[str, Any]] = []

        def finish(result: tuple[str, Any]) -> None:
            if not outcome:
                outcome.append(result)
                self._poke.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(work, finish, nursery)
            while not outcome:
                self._poke = trio.Event()
                if self._commanded():
                    finish(("command", None))
                    break
                await self._poke.wait()
            nursery.cancel_scope.cancel()
        return outcome[0]
