"""Hand-written fakes for unit tests of pure supervision logic (never for integration)."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from supervisor.errors import MisconfiguredError, StartError
from supervisor.supervision.policy import Termination, describe_exit
from supervisor.supervision.resource import CheckResult, CheckSettings
from supervisor.supervision.states import Liveness


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    jitter: float = 0.0


@dataclass(frozen=True, slots=True)
class Intensity:
    max_restarts: int = 10
    within: float = 300.0


@dataclass(frozen=True, slots=True)
class Restart:
    policy: str = "always"
    backoff: Backoff = Backoff()
    reset_after: float = 600.0
    intensity: Intensity = Intensity()
    fatal_retry: float | None = None

    @property
    def fatal_retry_after(self) -> float:
        return self.backoff.max if self.fatal_retry is None else self.fatal_retry


class FakeHandle:
    """An instance that lives `lifetime` seconds (forever if None), then exits with `code`."""

    def __init__(self, number: int, lifetime: float | None, code: int, ignores_stop: bool) -> None:
        self.number = number
        self.lifetime = lifetime
        self.code = code
        self.ignores_stop = ignores_stop
        self.ended = trio.Event()
        self.termination: Termination | None = None
        self.stop_calls = 0

    @property
    def pid(self) -> int:
        return 1000 + self.number

    @property
    def ident(self) -> str | None:
        return None

    def exit(self, code: int) -> None:
        if not self.ended.is_set():
            self.termination = describe_exit(code)
            self.ended.set()

    async def wait(self) -> Termination:
        if self.lifetime is not None:
            with trio.move_on_after(self.lifetime):
                await self.ended.wait()
            self.exit(self.code)
        await self.ended.wait()
        assert self.termination is not None
        return self.termination

    async def stop(self, timeout: float) -> Termination:
        self.stop_calls += 1
        if self.ignores_stop:
            with trio.move_on_after(timeout):
                await self.ended.wait()
            self.exit(-9)
        self.exit(-15)
        assert self.termination is not None
        return self.termination

    def kill(self) -> None:
        self.exit(-9)


@dataclass
class FakeResource:
    """Scriptable resource: how long start and readiness take, how runs end, what checks say."""

    kind: str = "fake"
    lifetime: float | None = None
    exit_code: int = 1
    start_delay: float = 0.0
    ready_delay: float = 0.0
    start_failures: int = 0
    misconfigured: bool = False
    ignores_stop: bool = False
    check_settings: CheckSettings | None = None
    check_results: list[Liveness] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    handles: list[FakeHandle] = field(default_factory=list)

    async def start(self) -> FakeHandle:
        self.starts.append(trio.current_time())
        await trio.sleep(self.start_delay)
        if self.misconfigured:
            raise MisconfiguredError("bad settings")
        if self.start_failures:
            self.start_failures -= 1
            raise StartError("cannot start")
        handle = FakeHandle(len(self.handles), self.lifetime, self.exit_code, self.ignores_stop)
        self.handles.append(handle)
        return handle

    async def ready(self, handle: FakeHandle) -> None:
        await trio.sleep(self.ready_delay)

    async def check(self, handle: FakeHandle) -> CheckResult:
        liveness = self.check_results.pop(0) if self.check_results else Liveness.ONLINE
        return CheckResult(liveness, f"fake {liveness.value.lower()}")

    def is_success(self, term: Termination) -> bool:
        return term.exit_code == 0

    @property
    def current(self) -> FakeHandle:
        return self.handles[-1]
