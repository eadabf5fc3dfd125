"""Event-loop lag: how late a periodic task wakes up is how blocked the loop is.

A supervisor whose loop is blocked cannot notice deaths or answer the API; the lag is
exported as a metric and (with `last_tick`) tells the systemd watchdog whether the
daemon is still making progress.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class LoopMonitor:
    """Samples the event loop's lag every `interval` seconds."""

    def __init__(
        self, interval: float = 1.0, on_sample: Callable[[float], None] | None = None
    ) -> None:
        self.interval = interval
        self.lag = 0.0
        self.last_tick = trio.current_time()
        self._on_sample = on_sample

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            expected = trio.current_time() + self.interval
            await trio.sleep(self.interval)
            now = trio.current_time()
            self.lag = max(0.0, now - expected)
            self.last_tick = now
            if self._on_sample is not None:
                self._on_sample(self.lag)
