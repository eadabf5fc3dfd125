"""The free slot numbers of a pool, lowest first.

A pool of `max_size` up to 10,000 used to keep a list of every free slot number, so a
reload to a huge `max_size` allocated it all up front (the daemon was once OOM-killed
that way). Here a slot number that was never used is implicit (at or above `_next`);
only numbers given back are stored. Memory follows the slots a pool has used, never the
limit it is allowed.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection


class FreeSlots:
    """Slot numbers below `limit` not held by a sandbox; `take()` gives the lowest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._next = 0  # every number from here up to `limit` is free and never used
        self._returned: list[int] = []  # a heap of freed numbers below `_next`

    def __bool__(self) -> bool:
        return bool(self._returned) or self._next < self.limit

    def take(self) -> int:
        """The lowest free number (the caller checked there is one)."""
        if self._returned:
            return heapq.heappop(self._returned)
        if self._next >= self.limit:
            raise IndexError("no free slot")
        self._next += 1
        return self._next - 1

    def give_back(self, slot: int) -> None:
        """`slot` is free again (ignored if it is at or above the limit)."""
        if slot < self.limit:
            heapq.heappush(self._returned, slot)

    def resize(self, limit: int, taken: Collection[int]) -> None:
        """A new limit; `taken` are the numbers still held (some may be above it)."""
        used = max(self._next, max(taken, default=-1) + 1)  # every number below was used
        self.limit = limit
        self._next = min(used, limit)
        self._returned = [slot for slot in range(self._next) if slot not in taken]
        heapq.heapify(self._returned)
