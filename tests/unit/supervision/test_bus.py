"""The event bus: stamping, listeners, replay with gaps, slow subscribers cut off."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from supervisor.supervision.bus import EventBus
from supervisor.supervision.states import Event, Refusal, Transition


def event(name: str = "r") -> Transition:
    return Transition("resource", name, "process", "STOPPED", "STARTING", "autostart")


def test_events_get_monotonic_seq() -> None:
    """Every published event is stamped with the next seq and a wall-clock time."""
    bus = EventBus()
    first, second = bus.publish(event()), bus.publish(event())
    assert (first.seq, second.seq) == (1, 2)
    assert second.time >= first.time > 0


def test_a_raising_listener_does_not_stop_delivery() -> None:
    """A broken listener is skipped; the others still see the event."""
    bus = EventBus()
    seen: list[int] = []

    def broken(_: Transition) -> None:
        raise RuntimeError("boom")

    bus.add_listener(broken)
    remove = bus.add_listener(lambda e: seen.append(e.seq))
    bus.publish(event())
    remove()
    bus.publish(event())
    assert seen == [1]


def test_a_raising_listener_is_counted() -> None:
    """Every error a listener raises is counted (and logged), once per event."""
    bus = EventBus()

    def broken(_: Event) -> None:
        raise RuntimeError("boom")

    bus.add_listener(broken)
    bus.publish(event())
    bus.publish(Refusal("environment", "box", "overload"))
    assert bus.listener_errors == 2


def test_only_transitions_are_stamped_kept_and_streamed() -> None:
    """Other events reach the listeners alone: no seq, not in the ring."""
    bus = EventBus()
    seen: list[Event] = []
    bus.add_listener(seen.append)
    refused = bus.publish(Refusal("environment", "box", "overload"))
    moved = bus.publish(event())
    assert seen == [refused, moved]
    assert bus.last_seq == moved.seq == 1
    assert bus.replay(0) == ([moved], False)


def test_the_ring_keeps_a_transition_without_a_subclasss_extras() -> None:
    """Listeners get the subclass, stamped; the ring and the stream a plain Transition."""

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Rich(Transition):
        extra: object

    bus = EventBus()
    seen: list[Event] = []
    bus.add_listener(seen.append)
    rich = Rich("sandbox", "box/0:0", "fake", "READY", "ACQUIRED", "status", extra=object())
    bus.publish(rich)
    [kept], _ = bus.replay(0)
    assert type(kept) is Transition
    assert kept.to_json() == rich.to_json() | {"seq": 1, "time": kept.time}
    assert isinstance(seen[0], Rich)
    assert seen[0].seq == 1


def test_a_bus_nobody_hears_is_idle() -> None:
    """No listener, no subscriber, no history: publishers may skip building events."""
    bus = EventBus(history=0)
    assert bus.idle
    remove = bus.add_listener(lambda _: None)
    assert not bus.idle
    remove()
    assert bus.idle
    assert not EventBus().idle  # it keeps history for replay


def test_replay_reports_a_gap_once_events_left_the_ring() -> None:
    """replay(since) returns what is kept and says whether older events were lost."""
    bus = EventBus(history=3)
    for _ in range(5):
        bus.publish(event())
    events, gap = bus.replay(0)
    assert [e.seq for e in events] == [3, 4, 5]
    assert gap
    events, gap = bus.replay(2)
    assert [e.seq for e in events] == [3, 4, 5]
    assert not gap
    assert bus.replay(5) == ([], False)


async def test_subscribers_receive_and_slow_ones_are_cut_off() -> None:
    """A subscriber that does not keep up has its stream ended instead of blocking publish."""
    bus = EventBus()
    async with bus.subscribe(buffer=2) as slow:
        for _ in range(3):
            bus.publish(event())
        received = [e.seq async for e in slow]
    assert received == [1, 2]
    async with bus.subscribe(buffer=10) as fast:
        bus.publish(event())
        with trio.fail_after(1):
            assert (await fast.receive()).seq == 4
