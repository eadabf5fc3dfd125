"""A pool's bookkeeping: its sandboxes by slot, the idle ones, who waits, its sessions, its size.

Why it is built this way (rule numbers are the semantics page's):
- The pool's size is a number of slots. A slot is taken synchronously, before any await,
  when a sandbox is added, and given back only when that sandbox is OFFLINE, so
  `max_size` holds under any concurrency (rule 15; the reference overshoots). A dead
  sandbox's slot goes to its replacement, one generation up (rule 18).
- Waiters queue in arrival order. A sandbox turning READY goes to the waiter it was grown
  for, else to the oldest waiter, else it idles: an event, not a poll (rule 15). A waiter
  that gave up is skipped, and what was reserved for it goes to the next.
- The pool owns these fields and never awaits: the environment, admission, leases and
  maintenance ask it through its methods, so a decision and its effect cannot be split
  by another task (trio's `MemoryChannelState` is the model).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from supervisor.sandbox.slots import FreeSlots
from supervisor.sandbox.status import SandboxStatus

if TYPE_CHECKING:
    from supervisor.sandbox.sandbox import Sandbox
    from supervisor.sandbox.session import Session

S = SandboxStatus


@dataclass(eq=False, slots=True)
class Waiter:
    """One caller of `acquire` waiting for a sandbox (or an error)."""

    event: trio.Event = field(default_factory=trio.Event)
    sandbox: Sandbox | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.event.is_set()

    def serve(self, sandbox: Sandbox) -> None:
        sandbox.acquire()
        self.sandbox = sandbox
        self.event.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.event.set()

    def give_up(self) -> None:
        """Stop waiting: a sandbox later reserved for it goes to the next waiter."""
        self.event.set()


class Pool:
    """The sandboxes of one environment, the callers waiting for one, and its sessions."""

    def __init__(self, min_ready: int, max_size: int) -> None:
        self._min_ready = min_ready
        self._max_size = max_size
        self._free = FreeSlots(max_size)
        self._slots: dict[int, Sandbox] = {}
        self._generations: dict[int, int] = {}
        self._one_offs: set[Sandbox] = set()
        self._one_offs_made = 0
        self._live = 0  # sandboxes not yet OFFLINE
        self._idle: dict[Sandbox, None] = {}  # READY and not handed out, oldest first
        self._reserved: dict[Sandbox, Waiter] = {}
        self._waiters: deque[Waiter] = deque()
        self._sessions: dict[str, Session] = {}
        self._tally = dict.fromkeys(("dead", "replaced", "expired"), 0)

    # -- size ------------------------------------------------------------------------

    @property
    def min_ready(self) -> int:
        return self._min_ready

    @property
    def max_size(self) -> int:
        return self._max_size

    @property
    def live(self) -> int:
        """Sandboxes that are not OFFLINE yet (each holds its slot)."""
        return self._live

    @property
    def has_room(self) -> bool:
        """Whether one more sandbox fits under `max_size`."""
        return bool(self._free) and self._live < self._max_size

    @property
    def below_min_ready(self) -> bool:
        return self._live < self._min_ready

    def fits(self, sandbox: Sandbox) -> bool:
        """Whether `sandbox`'s slot is still within `max_size` (a resize may drop it)."""
        return sandbox.slot < self._max_size

    def resize(self, min_ready: int, max_size: int) -> list[Sandbox]:
        """New bounds; returns the idle sandboxes above `max_size`, now out of service
        (the caller shuts them down). Busy ones above it retire at their session's end."""
        if max_size != self._max_size:
            held = {
                slot for slot, sandbox in self._slots.items() if sandbox.status is not S.OFFLINE
            }
            self._free.resize(max_size, held)
        self._min_ready, self._max_size = min_ready, max_size
        return [self.take_out(sandbox) for sandbox in list(self._idle) if not self.fits(sandbox)]

    # -- sandboxes -------------------------------------------------------------------

    def add(self, make: Callable[[int, int], Sandbox], waiter: Waiter | None = None) -> Sandbox:
        """A new sandbox (`make(slot, generation)`) in the lowest free slot, reserved for
        `waiter` if given. The caller checked `has_room`."""
        slot = self._free.take()
        generation = self._generations.get(slot, -1) + 1
        if generation:
            self._tally["replaced"] += 1
        self._generations[slot] = generation
        sandbox = self._slots[slot] = make(slot, generation)
        self._live += 1
        if waiter is not None:
            self._reserved[sandbox] = waiter
        return sandbox

    def add_one_off(self, make: Callable[[int], Sandbox], waiter: Waiter) -> Sandbox:
        """A one-session sandbox (`max_size` 0, rule 14), numbered apart from the slots,
        tracked so that shutdown still reaches it."""
        sandbox = make(self._one_offs_made)
        self._one_offs_made += 1
        self._one_offs.add(sandbox)
        self._reserved[sandbox] = waiter
        self._live += 1
        return sandbox

    def remove(self, sandbox: Sandbox) -> None:
        """`sandbox` is OFFLINE: its slot is free again."""
        self._live -= 1
        self._reserved.pop(sandbox, None)
        if sandbox in self._one_offs:
            self._one_offs.discard(sandbox)
        elif self._slots.get(sandbox.slot) is sandbox:
            self._tally["dead"] += 1
            if self.fits(sandbox):
                self._free.give_back(sandbox.slot)
            else:
                del self._slots[sandbox.slot]

    def sandboxes(self) -> list[Sandbox]:
        """Every sandbox the pool tracks (the OFFLINE ones until their slot is reused)."""
        return [*self._slots.values(), *self._one_offs]

    # -- idle sandboxes --------------------------------------------------------------

    def offer(self, sandbox: Sandbox) -> bool:
        """`sandbox` turned READY: to its reserving waiter, else the oldest, else idle.

        Returns False for a reusable sandbox whose slot a resize dropped: the caller
        shuts it down.
        """
        reserved = self._reserved.pop(sandbox, None)
        if reserved is not None and not reserved.done:
            reserved.serve(sandbox)
            return True
        if sandbox.reusable and not self.fits(sandbox):
            return False
        if (waiter := self.next_waiter()) is not None:
            waiter.serve(sandbox)
            return True
        self._idle[sandbox] = None
        return True

    def left_ready(self, sandbox: Sandbox) -> None:
        """`sandbox` left READY (handed out, or shutting down): it is no longer idle."""
        self._idle.pop(sandbox, None)

    def first_idle(self) -> Sandbox | None:
        return next(iter(self._idle), None)

    def idle(self) -> list[Sandbox]:
        """The idle sandboxes, in the order they turned READY."""
        return list(self._idle)

    def take_out(self, sandbox: Sandbox) -> Sandbox:
        """Take an idle sandbox out of service, so that no acquire gets it while the
        caller shuts it down."""
        self._idle.pop(sandbox, None)
        return sandbox

    # -- waiters ---------------------------------------------------------------------

    @property
    def queued(self) -> bool:
        """Whether anyone is queued (idle sandboxes go to the queue first)."""
        return bool(self._waiters)

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done)

    def enqueue(self, waiter: Waiter) -> None:
        self._waiters.append(waiter)

    def requeue(self, waiter: Waiter) -> None:
        """Put `waiter` back at the head: a bring-up for it failed and will be retried."""
        self._waiters.appendleft(waiter)

    def withdraw(self, waiter: Waiter) -> None:
        """`waiter` gave up: out of the queue, if still in it."""
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def next_waiter(self) -> Waiter | None:
        """The oldest waiter still waiting, out of the queue (None: nobody waits)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done:
                return waiter
        return None

    def serve_waiters(self) -> None:
        """Hand idle sandboxes to waiters, oldest first."""
        while self._idle and (waiter := self.next_waiter()) is not None:
            waiter.serve(next(iter(self._idle)))

    def fail_waiters(self, error: BaseException) -> None:
        while (waiter := self.next_waiter()) is not None:
            waiter.fail(error)

    # -- sessions --------------------------------------------------------------------

    @property
    def sessions(self) -> int:
        """Sessions in progress."""
        return len(self._sessions)

    def session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def live_sessions(self) -> list[Session]:
        """The sessions in progress, oldest first."""
        return list(self._sessions.values())

    def session_started(self, session: Session) -> None:
        self._sessions[session.id] = session

    def session_over(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    # -- what housekeeping reports ---------------------------------------------------

    def count_expired(self) -> None:
        self._tally["expired"] += 1

    def take_tally(self) -> dict[str, int]:
        """Sandboxes found dead, slots refilled and sessions expired since the last call."""
        tally, self._tally = self._tally, dict.fromkeys(self._tally, 0)
        return tally
