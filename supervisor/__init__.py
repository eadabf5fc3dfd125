"""supervisor-daemon: keeps processes, containers, Deephaven servers and sandbox pools alive."""

from __future__ import annotations

__version__ = "0.1.0"
