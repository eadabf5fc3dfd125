"""The feature hooks of one sandbox: their order, their error rules, their events.

Why it is built this way (rule numbers are the semantics page's):
- A feature is recorded as set up *before* its `setup` runs, so `teardown` pairs with
  every attempted setup, including the one that failed (rule 2); teardown runs in reverse.
- `setup_session` stops at the first error and notes each feature it attempted, so the
  caller can pair `teardown_session` with exactly those (rule 5). `teardown_session` and
  `teardown` run every hook and collect user errors per feature (rules 7, 10).
- A hook's error is returned, not raised: the caller decides whether it condemns the
  sandbox, fails a session or is only logged. A state error is recorded on the sandbox
  before anyone sees it.
- Each hook is called by name in the code (`feature.setup(sandbox)`), never looked up
  from a string; the `Hook` label only names it in its event.

Features are typed by what a sandbox runs of them (`HookSet`), generic in the sandbox's
type: `sandbox` uses this module, so this module cannot name `Sandbox`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import trio

from supervisor.errors import SandboxStateError
from supervisor.sandbox.event_types import EnvironmentView, FeatureHookRan, Hook, SandboxView
from supervisor.sandbox.keepalive import Chore

if TYPE_CHECKING:
    from supervisor.sandbox.session import Session
    from supervisor.supervision.bus import EventBus

X_contra = TypeVar("X_contra", contravariant=True)


class HookSet(Protocol[X_contra]):
    """A feature's hooks, run on sandboxes of type `X_contra` (`features.Feature`)."""

    name: str
    housekeep_interval: float | None

    async def setup(self, sandbox: X_contra | None) -> None: ...
    async def teardown(self, sandbox: X_contra | None) -> None: ...
    async def setup_session(self, sandbox: X_contra, session: Session | None) -> None: ...
    async def teardown_session(self, sandbox: X_contra, session: Session) -> None: ...
    async def housekeep(self, sandbox: X_contra | None) -> None: ...


class Subject(SandboxView, Protocol):
    """The sandbox the hooks run on, as they see it."""

    def record(self, error: BaseException) -> None: ...


S = TypeVar("S", bound=Subject)


class Hooks(Generic[S]):
    """Runs the features' hooks on one sandbox, in order, publishing each."""

    def __init__(
        self, sandbox: S, features: Sequence[HookSet[S]], env: EnvironmentView, bus: EventBus
    ) -> None:
        self._sandbox = sandbox
        self._features = features
        self._env = env
        self._bus = bus
        self._set_up: list[HookSet[S]] = []

    @property
    def features(self) -> Sequence[HookSet[S]]:
        return self._features

    async def setup(self) -> None:
        """Every `setup`, in declaration order; raise the first error (rule 2)."""
        for feature in self._features:
            self._set_up.append(feature)  # before setup runs: teardown pairs with it
            if error := await self._run(feature, "setup", feature.setup(self._sandbox)):
                raise error

    async def setup_sessions(self, session: Session | None, attempted: list[HookSet[S]]) -> None:
        """Every `setup_session`, noting each in `attempted`; raise the first error."""
        for feature in self._features:
            attempted.append(feature)
            work = feature.setup_session(self._sandbox, session)
            if (error := await self._run(feature, "setup_session", work, session)) is not None:
                raise error

    async def teardown_session(self, feature: HookSet[S], session: Session) -> BaseException | None:
        """One feature's `teardown_session`; its error, returned."""
        work = feature.teardown_session(self._sandbox, session)
        return await self._run(feature, "teardown_session", work, session)

    async def teardown_sessions(self, session: Session, errors: dict[str, BaseException]) -> None:
        """Every `teardown_session`, even after failures; user errors go into `errors`."""
        for feature in self._features:
            error = await self.teardown_session(feature, session)
            if error is not None and not isinstance(error, SandboxStateError):
                errors[feature.name] = error

    async def teardown(self, errors: dict[str, BaseException]) -> None:
        """`teardown` of every feature set up, in reverse; user errors go into `errors`.

        (Filled as it goes: a teardown cut short by the stop grace keeps what it found.)
        """
        for feature in reversed(self._set_up):
            error = await self._run(feature, "teardown", feature.teardown(self._sandbox))
            if error is not None and not isinstance(error, SandboxStateError):
                errors[feature.name] = error

    def chores(self) -> list[Chore]:
        """The periodic `housekeep` of each feature that has an interval."""
        return [
            Chore(feature.name, feature.housekeep_interval, partial(self._housekeep, feature))
            for feature in self._features
            if feature.housekeep_interval is not None
        ]

    async def _housekeep(self, feature: HookSet[S]) -> BaseException | None:
        return await self._run(feature, "housekeep", feature.housekeep(self._sandbox))

    async def _run(
        self,
        feature: HookSet[S],
        hook: Hook,
        work: Awaitable[None],
        session: Session | None = None,
    ) -> BaseException | None:
        started = trio.current_time()
        error: BaseException | None = None
        try:
            await work
        except Exception as exc:
            error = exc
            if isinstance(exc, SandboxStateError):
                self._sandbox.record(exc)
        if self._bus.idle:
            return error
        duration = trio.current_time() - started
        self._bus.publish(
            FeatureHookRan.of(
                self._env,
                self._sandbox,
                feature,
                hook=hook,
                duration=duration,
                error=error,
                session=session,
            )
        )
        return error
