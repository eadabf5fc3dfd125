"""Periodic checks of a RUNNING resource: probe every interval, count failures in a row.

Only what has no event is checked this way (a hung server answers nothing; a dead one
ends its handle). Each check is bounded by its timeout; the loop returns the outcome that
ends the run, and reports every check to the supervisor, which owns liveness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
import trio

from supervisor.supervision.resource import CheckResult, Handle, Resource
from supervisor.supervision.states import HOPELESS, Liveness

Report = Callable[[CheckResult, float, int], None]
"""(result, duration in seconds, failures in a row including this one)."""


async def monitor(
    resource: Resource, handle: Handle, report: Report, log: structlog.typing.FilteringBoundLogger
) -> tuple[str, Any]:
    """Probe `handle` every interval; return once the resource must be restarted."""
    consecutive = 0
    while True:
        check = resource.check_settings
        assert check is not None
        await trio.sleep(check.interval)
        started = trio.current_time()
        result = CheckResult(Liveness.OFFLINE, f"check timed out after {check.timeout:g}s")
        with trio.move_on_after(check.timeout):
            try:
                result = await resource.check(handle)
            except Exception as exc:
                log.exception("resource_check_crashed")
                result = CheckResult(Liveness.UNKNOWN, f"check crashed: {exc!r}")
        consecutive = 0 if result.ok else consecutive + 1
        report(result, trio.current_time() - started, consecutive)
        if result.liveness in HOPELESS:
            return ("hopeless", result)
        if consecutive >= check.failures:
            return (check.reason, f"{consecutive} failed checks in a row: {result.detail}")
