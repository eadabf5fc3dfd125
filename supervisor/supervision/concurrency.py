"""Small structured-concurrency helpers for the supervision loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

T = TypeVar("T")


async def race(*fns: Callable[[], Awaitable[T]]) -> T:
    """Run `fns` concurrently; return the first result and cancel the rest."""
    results: list[T] = []
    async with trio.open_nursery() as nursery:

        async def run(fn: Callable[[], Awaitable[T]]) -> None:
            result = await fn()
            if not results:
                results.append(result)
            nursery.cancel_scope.cancel()

        for fn in fns:
            nursery.start_soon(run, fn)
    if not results:  # pragma: no cover - only when cancelled from outside, which re-raises
        raise RuntimeError("race() ended without a result")
    return results[0]


def tagged(fn: Callable[[], Awaitable[object]], tag: bool) -> Callable[[], Awaitable[bool]]:
    """`fn` returning `tag` instead of its own result (to tell racers apart)."""

    async def run() -> bool:
        await fn()
        return tag

    return run
