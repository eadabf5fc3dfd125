"""Where the daemon is in its life (starting, ready, stopping) and the requests to move on.

One small owner that the API, the reloader, the signals and the composition root all
read, instead of each asking the daemon.
"""

from __future__ import annotations

import trio


class Lifecycle:
    """Ready once everything made its first start attempt; stopping once asked to stop."""

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.stop_requested = trio.Event()
        self.forced = trio.Event()
        self.stopping = False

    def request_stop(self, *, force: bool = False) -> None:
        """Stop gracefully; `force` skips what is left of the graceful part."""
        self.stop_requested.set()
        if force:
            self.forced.set()
