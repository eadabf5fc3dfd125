"""A running sandbox's housekeeping: keepalive probes, death watch, feature housekeeping.

Each runs as its own task under one cancel scope kept on the sandbox, so that shutdown
(or the first failure) stops them all. A state error found here, outside any client work,
condemns the sandbox: it is recorded and the sandbox shut down, ending any session on it
(rule 12). A user error from a feature's `housekeep` is only logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
import trio

from supervisor.errors import SandboxStateError
from supervisor.sandbox.hooks import run_hook

if TYPE_CHECKING:
    from supervisor.sandbox.features import Feature
    from supervisor.sandbox.sandbox import Sandbox

log = structlog.get_logger("supervisor.sandbox")


async def housekeep(sandbox: Sandbox) -> None:
    """Keepalive probes, death watch and feature housekeeping until shutdown (rule 12)."""
    assert sandbox.instance is not None
    instance = sandbox.instance
    counter = 0

    async def probe() -> None:
        nonlocal counter
        while True:
            await trio.sleep(sandbox.env.settings.keepalive_interval)
            counter += 1
            started = trio.current_time()
            error: BaseException | None = None
            try:
                with trio.fail_after(sandbox.env.settings.keepalive_interval):
                    await instance.check()
            except trio.TooSlowError:
                error = SandboxStateError(f"sandbox {sandbox.id} did not answer its keepalive")
            except Exception as exc:
                error = exc
            sandbox.env.events.on_sandbox_housekeep(
                sandbox, counter, trio.current_time() - started, error
            )
            if error is not None:
                condemn(sandbox, error)

    async def feature_loop(feature: Feature, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            error = await run_hook(sandbox, feature, "housekeep")
            if isinstance(error, SandboxStateError):
                condemn(sandbox, error)
            elif error is not None:
                log.warning("feature_housekeep_failed", sandbox=sandbox.id, feature=feature.name)

    async def death() -> None:
        reason = await instance.wait_dead()
        condemn(sandbox, SandboxStateError(f"sandbox {sandbox.id} died: {reason}"))

    with trio.CancelScope() as sandbox._housekeeper:
        if sandbox.closing:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe)
            nursery.start_soon(death)
            for feature in sandbox.env.features:
                if feature.housekeep_interval is not None:
                    nursery.start_soon(feature_loop, feature, feature.housekeep_interval)


def condemn(sandbox: Sandbox, error: BaseException) -> None:
    """A state error outside client work: record it and shut down (ending any session)."""
    sandbox.record(error)
    if sandbox._housekeeper is not None:
        sandbox._housekeeper.cancel()
    sandbox.env.nursery.start_soon(sandbox.shutdown_quietly)
