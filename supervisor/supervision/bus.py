"""The in-process event bus: one stream of typed events, fanned out to listeners.

Every event goes to every listener, synchronously and in publish order; listeners (logs,
metrics, an environment's event handlers) filter the kinds they need by type.
`Transition`s are also stamped with a monotonic `seq`, kept in a ring and sent to async
subscribers (the API's event stream); other events (a feature hook that ran, an acquire
refused) reach only the listeners, so they never crowd transitions out of the ring.

Publishing never blocks and never fails: a raising listener is logged, counted and
skipped, so no listener can stop a status change. A bus nobody hears (`idle`: an
in-process environment without handlers) lets hot paths skip building their events. An async subscriber gets a bounded
channel, and one that falls behind is cut off rather than allowed to slow supervision
down; it resumes with `replay(since)`, which says when events it asked for have already
left the ring.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import structlog
import trio

from supervisor.supervision.states import Event, Transition

log = structlog.get_logger("supervisor.bus")

Listener = Callable[[Event], None]
E = TypeVar("E", bound=Event)
T = TypeVar("T", bound=Transition)


class EventBus:
    """Delivers events to listeners; stamps, keeps and streams the transitions among them."""

    def __init__(self, history: int = 10_000) -> None:
        self._seq = 0
        self._ring: deque[Transition] = deque(maxlen=history)
        self._listeners: tuple[Listener, ...] = ()
        self._subscribers: set[trio.MemorySendChannel[Transition]] = set()
        self.listener_errors = 0

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def idle(self) -> bool:
        """Whether an event published now would reach nobody: no listener, no stream
        subscriber, no history (then it need not even be built)."""
        return not (self._listeners or self._subscribers or self._ring.maxlen)

    def publish(self, event: E) -> E:
        """Deliver `event` to every listener (a transition is stamped first); returns it."""
        if isinstance(event, Transition):
            event = self._record(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                self.listener_errors += 1
                log.exception("event_listener_failed", listener=repr(listener))
        return event

    def _record(self, event: T) -> T:
        self._seq += 1
        if self.idle:
            return event  # nobody can see it: stamping would cost more than the rest
        event = dataclasses.replace(event, seq=self._seq, time=time.time())
        kept = event.record()
        self._ring.append(kept)
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(kept)
            except trio.WouldBlock:
                # Too slow: end its stream; it can resume from the ring with `replay`.
                self._subscribers.discard(channel)
                channel.close()
            except trio.BrokenResourceError:
                self._subscribers.discard(channel)
        return event

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` for every event; returns a function that removes it."""
        self._listeners = (*self._listeners, listener)

        def remove() -> None:
            listeners = list(self._listeners)
            listeners.remove(listener)
            self._listeners = tuple(listeners)

        return remove

    def replay(self, since: int) -> tuple[list[Transition], bool]:
        """Transitions with seq > `since` still in the ring, and whether some were lost."""
        events = [e for e in self._ring if e.seq > since]
        first_kept = self._ring[0].seq if self._ring else self._seq + 1
        return events, since + 1 < first_kept and since < self._seq

    @asynccontextmanager
    async def subscribe(
        self, buffer: int = 1_000
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Transition]]:
        """Receive every transition published while the context is open."""
        send, receive = trio.open_memory_channel[Transition](buffer)
        self._subscribers.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
