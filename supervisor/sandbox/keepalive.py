"""A running sandbox's housekeeping: keepalive probes, death watch, feature housekeeping.

Each runs as its own task until the caller's cancel scope ends them (the sandbox keeps
that scope, so that shutdown or the first failure stops them all). A state error found
here, outside any client work, condemns the sandbox: it is recorded and the sandbox shut
down, ending any session on it (rule 12). A user error from a feature's `housekeep` is
only logged: it does not stop the loop (the reference's thread dies of it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog
import trio

from supervisor.errors import SandboxLostError, SandboxStateError

if TYPE_CHECKING:
    from supervisor.sandbox.instance import Instance

log = structlog.get_logger("supervisor.sandbox")


class Watched(Protocol):
    """A running sandbox, as its housekeeping sees it (`Sandbox`)."""

    @property
    def id(self) -> str: ...
    @property
    def keepalive_interval(self) -> float: ...
    def probed(self, counter: int, duration: float, error: BaseException | None) -> None:
        """Report one keepalive probe."""

    def condemn(self, error: BaseException) -> None:
        """Record a state error and shut down in the background."""


@dataclass(frozen=True, slots=True)
class Chore:
    """One feature's periodic `housekeep`; `run` returns (not raises) its error."""

    feature: str
    interval: float
    run: Callable[[], Awaitable[BaseException | None]]


async def watch(sandbox: Watched, instance: Instance, chores: Sequence[Chore]) -> None:
    """Probe, watch for death and run `chores` until cancelled (rule 12)."""
    counter = 0

    async def probe() -> None:
        nonlocal counter
        while True:
            interval = sandbox.keepalive_interval  # read anew: a reload may change it
            await trio.sleep(interval)
            counter += 1
            started = trio.current_time()
            error: BaseException | None = None
            try:
                with trio.fail_after(interval):
                    await instance.check()
            except trio.TooSlowError:
                error = SandboxStateError(f"sandbox {sandbox.id} did not answer its keepalive")
            except Exception as exc:
                error = exc
            sandbox.probed(counter, trio.current_time() - started, error)
            if error is not None:
                sandbox.condemn(error)

    async def chore_loop(chore: Chore) -> None:
        while True:
            await trio.sleep(chore.interval)
            error = await chore.run()
            if isinstance(error, SandboxStateError):
                sandbox.condemn(error)
            elif error is not None:
                log.warning("feature_housekeep_failed", sandbox=sandbox.id, feature=chore.feature)

    async def death() -> None:
        try:
            reason = await instance.wait_dead()
        except SandboxLostError as exc:  # not dead as far as anyone knows, but gone
            sandbox.condemn(exc)
            return
        sandbox.condemn(SandboxStateError(f"sandbox {sandbox.id} died: {reason}"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        nursery.start_soon(death)
        for chore in chores:
            nursery.start_soon(chore_loop, chore)
