"""Running one feature hook and reporting it as an event.

A sandbox's hooks return their error rather than raise it: the caller decides whether it
condemns the sandbox, fails a session or is only logged. A state error is recorded on the
sandbox before anyone sees it. Environment-scoped hooks (sandbox `None`) raise, as the
environment's start and housekeeping want.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from supervisor.errors import SandboxStateError

if TYPE_CHECKING:
    from supervisor.sandbox.environment import Environment
    from supervisor.sandbox.features import Feature
    from supervisor.sandbox.sandbox import Sandbox
    from supervisor.sandbox.session import Session


async def run_hook(
    sandbox: Sandbox, feature: Feature, hook: str, session: Session | None = None
) -> BaseException | None:
    """Run one feature hook on `sandbox`, emit its event; return (not raise) its error."""
    started = trio.current_time()
    error: BaseException | None = None
    try:
        if hook == "setup":
            await feature.setup(sandbox)
        elif hook == "teardown":
            await feature.teardown(sandbox)
        elif hook == "setup_session":
            await feature.setup_session(sandbox, session)
        elif hook == "teardown_session":
            assert session is not None
            await feature.teardown_session(sandbox, session)
        else:
            await feature.housekeep(sandbox)
    except Exception as exc:
        error = exc
        if isinstance(exc, SandboxStateError):
            sandbox.record(exc)
    duration = trio.current_time() - started
    events = sandbox.env.events
    if hook == "setup":
        events.on_feature_setup(sandbox, feature, duration, error)
    elif hook == "teardown":
        events.on_feature_teardown(sandbox, feature, duration, error)
    elif hook == "setup_session":
        events.on_feature_setup_session(sandbox, feature, session, duration, error)
    elif hook == "teardown_session":
        assert session is not None
        events.on_feature_teardown_session(sandbox, feature, session, duration, error)
    else:
        events.on_feature_housekeep(sandbox, feature, 0, duration, error)
    return error


async def run_env_hook(env: Environment, feature: Feature, hook: str) -> None:
    """Run one environment-scoped feature hook and emit its event; errors propagate."""
    started = trio.current_time()
    error: BaseException | None = None
    try:
        if hook == "setup":
            await feature.setup(None)
        elif hook == "teardown":
            await feature.teardown(None)
        else:
            await feature.housekeep(None)
    except Exception as exc:
        error = exc
        raise
    finally:
        duration = trio.current_time() - started
        if hook == "setup":
            env.events.on_feature_setup(None, feature, duration, error)
        elif hook == "teardown":
            env.events.on_feature_teardown(None, feature, duration, error)
        else:
            env.events.on_feature_housekeep(None, feature, env.housekeep_counter, duration, error)
