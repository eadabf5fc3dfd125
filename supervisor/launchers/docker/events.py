"""A Docker engine's container events as per-container watches and an engine-up flag.

Bookkeeping on the loop only (no SDK call here): `launchers.docker.engine` feeds it the decoded
events of its one stream and tells it when the stream connects and ends. Replays after
a reconnect (`since`) are dropped by a bounded memory of recent events, and a death is
told from an outage by what ended: the stream (engine down) or the container (`die`).
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import structlog
import trio

from supervisor.supervision.policy import Termination, describe_exit

log = structlog.get_logger("supervisor.docker")

_REMEMBERED = 2048  # events kept for deduplication: far more than a reconnect replays


class Watch:
    """What the event stream has told us about one container, until it ends."""

    __slots__ = ("_registry", "done", "id", "kill_signal", "oom", "termination")

    def __init__(self, container_id: str, registry: dict[str, Watch]) -> None:
        self.id = container_id
        self._registry = registry
        registry[container_id] = self
        self.done = trio.Event()
        self.termination: Termination | None = None
        self.kill_signal: int | None = None
        self.oom = False

    def finish(self, termination: Termination) -> None:
        """Record the end (the first one wins) and stop listening for this container."""
        if not self.done.is_set():
            self.termination = termination
            self.done.set()
        self.forget()

    def forget(self) -> None:
        if self._registry.get(self.id) is self:
            del self._registry[self.id]


def death(exit_code: int | None, kill_signal: int | None, oom: bool) -> Termination:
    """A container's end as a Termination: after a `kill` or `oom` event it is a signal."""
    if oom:
        return Termination("signal", "killed: out of memory", signal=9)
    if exit_code is None:
        return Termination("exit_code", "died without an exit code")
    if kill_signal and exit_code == 128 + kill_signal:
        return describe_exit(-kill_signal)
    return describe_exit(exit_code)


def int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def signal_number(value: object) -> int | None:
    """A signal attribute ("9", "SIGKILL", "kill") as a number; None if unknown."""
    number = int_or_none(value)
    if number is not None or not isinstance(value, str):
        return number
    name = value.upper() if value.upper().startswith("SIG") else f"SIG{value.upper()}"
    return int(signal.Signals[name]) if name in signal.Signals.__members__ else None


class ContainerEvents:
    """Watches keyed by container id, fed by one engine's event stream."""

    def __init__(self, on_death: Callable[[str], None]) -> None:
        self.engine_up = False
        self.reconnects = 0
        self.since: str | None = None  # where a reconnect resumes the stream
        self.watches: dict[str, Watch] = {}
        self._on_death = on_death
        self._ever_connected = False
        self._up_changed = trio.Event()
        self._seen: deque[tuple[str, str, object]] = deque(maxlen=_REMEMBERED)
        self._seen_set: set[tuple[str, str, object]] = set()

    def watch(self, container_id: str) -> Watch:
        return self.watches.get(container_id) or Watch(container_id, self.watches)

    def awaited(self) -> list[Watch]:
        return [w for w in self.watches.values() if not w.done.is_set()]

    async def wait_engine(self, up: bool) -> None:
        """Return once `engine_up` is `up`."""
        while self.engine_up is not up:
            await self._up_changed.wait()

    def connected(self) -> bool:
        """The stream is up; True when it is a reconnect (events may have been missed)."""
        again = self._ever_connected
        self._ever_connected = True
        self.reconnects += again
        self._set_up(True)
        return again

    def disconnected(self) -> None:
        self._set_up(False)

    def _set_up(self, up: bool) -> None:
        if up is not self.engine_up:
            self.engine_up = up
            log.info("docker_engine_up" if up else "docker_engine_down")
            self._up_changed.set()
            self._up_changed = trio.Event()

    def dispatch(self, event: Mapping[str, Any]) -> None:
        """Apply one decoded event; a replayed one is ignored."""
        action = str(event.get("Action") or event.get("status") or "")
        actor = event.get("Actor") or {}
        container_id = str(actor.get("ID") or event.get("id") or "")
        when = event.get("timeNano")
        key = (container_id, action, when)
        if key in self._seen_set:
            return
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(key)
        self._seen_set.add(key)
        if isinstance(when, int):
            self.since = f"{when // 10**9}.{when % 10**9:09d}"
        watch = self.watches.get(container_id)
        if watch is None:
            return
        attributes = actor.get("Attributes") or {}
        if action == "kill":
            watch.kill_signal = signal_number(attributes.get("signal"))
        elif action == "oom":
            watch.oom = True
        elif action == "die":
            code = int_or_none(attributes.get("exitCode"))
            watch.finish(death(code, watch.kill_signal, watch.oom))
            self._on_death(container_id)
        elif action == "destroy":
            watch.finish(Termination("liveness", "the container was removed"))
