"""The in-process event bus: every transition, stamped, kept in a ring, fanned out.

Publishing never blocks and never fails: listeners (logs, metrics) run synchronously and
a raising listener is logged and skipped; async subscribers (the API's event stream) get
a bounded channel, and one that falls behind is cut off rather than allowed to slow
supervision down. A cut-off subscriber resumes with `replay(since)`, which says when
events it asked for have already left the ring.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog
import trio

from supervisor.supervision.states import Transition

log = structlog.get_logger("supervisor.bus")

Listener = Callable[[Transition], None]


class EventBus:
    """Stamps transitions with a monotonic `seq` and delivers them."""

    def __init__(self, history: int = 10_000) -> None:
        self._seq = 0
        self._ring: deque[Transition] = deque(maxlen=history)
        self._listeners: list[Listener] = []
        self._subscribers: set[trio.MemorySendChannel[Transition]] = set()

    @property
    def last_seq(self) -> int:
        return self._seq

    def publish(self, event: Transition) -> Transition:
        """Stamp `event`, remember it and deliver it; returns the stamped event."""
        self._seq += 1
        event = dataclasses.replace(event, seq=self._seq, time=time.time())
        self._ring.append(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event_listener_failed", listener=repr(listener))
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                # Too slow: end its stream; it can resume from the ring with `replay`.
                self._subscribers.discard(channel)
                channel.close()
            except trio.BrokenResourceError:
                self._subscribers.discard(channel)
        return event

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` for every event; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def replay(self, since: int) -> tuple[list[Transition], bool]:
        """Events with seq > `since` still in the ring, and whether some were lost."""
        events = [e for e in self._ring if e.seq > since]
        first_kept = self._ring[0].seq if self._ring else self._seq + 1
        return events, since + 1 < first_kept and since < self._seq

    @asynccontextmanager
    async def subscribe(
        self, buffer: int = 1_000
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Transition]]:
        """Receive every event published while the context is open."""
        send, receive = trio.open_memory_channel[Transition](buffer)
        self._subscribers.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
