"""Hand-written fakes for unit tests of pure supervision logic (never for integration)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import trio

from supervisor.errors import MisconfiguredError, SandboxLostError, SandboxStateError, StartError
from supervisor.sandbox.backends import ExecResult
from supervisor.sandbox.events import EventHandler
from supervisor.sandbox.features import Feature
from supervisor.sandbox.instance import PLAIN, ExecOptions
from supervisor.sandbox.sandbox import Sandbox
from supervisor.sandbox.session import Session
from supervisor.supervision.policy import Termination, describe_exit
from supervisor.supervision.resource import CheckResult, CheckSettings, ResourceBase
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
class FakeResource(ResourceBase):
    """Scriptable resource: how long start and readiness take, how runs end, what checks say."""

    kind: str = "fake"
    name: str = "fake"
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


# -- sandbox environments -------------------------------------------------------------


class FakeInstance:
    """A sandbox that lives in memory; `break_()` makes it a broken one."""

    def __init__(self, backend: FakeBackend, sandbox_id: str) -> None:
        self.backend = backend
        self.id = sandbox_id
        self.dead = trio.Event()
        self.lost = False  # with `dead` set: its place is lost (a swarm node down)
        self.broken = False
        self.stopped = False
        self.state: dict[str, str] = {}  # what client work left behind

    def break_(self) -> None:
        self.broken = True

    async def exec(
        self, argv: Sequence[str], *, timeout: float, options: ExecOptions = PLAIN
    ) -> ExecResult:
        if self.broken or self.stopped:
            raise SandboxStateError(f"{self.id} is broken")
        if argv[0] == "user-error":
            raise ValueError("bad input")
        if argv[0] == "set":
            self.state[argv[1]] = argv[2]
        if argv[0] == "later":  # a slow command that leaves state behind when it finishes
            await trio.sleep(float(argv[1]))
            self.state[argv[2]] = argv[3]
        await trio.sleep(self.backend.exec_delay)
        return ExecResult(0, " ".join(f"{k}={v}" for k, v in sorted(self.state.items())), "", 0.0)

    async def run_script(
        self, script: str, *, timeout: float, options: ExecOptions = PLAIN
    ) -> ExecResult:
        return await self.exec(["script", script], timeout=timeout, options=options)

    async def put(self, source: Path, dest: str) -> None:
        self.state[dest] = source.name

    async def upload(self, dest: str, data: IO[bytes], *, tar: bool, limit: int) -> None:
        self.backend.uploading.set()
        await self.backend.upload_gate.wait()  # a slow transfer, until the test opens it
        self.state[dest] = data.read().decode()

    async def check(self) -> None:
        if self.broken:
            raise SandboxStateError(f"{self.id} failed its keepalive")

    async def wait_dead(self) -> str:
        await self.dead.wait()
        if self.lost:
            raise SandboxLostError(f"{self.id} is lost: its node is down")
        return "killed"

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.backend.live -= 1

    def connection(self) -> dict[str, Any]:
        return {"sandbox": self.id}


class FakeBackend:
    """Creates FakeInstances after `create_delay`; `failure` makes creation raise."""

    name = "fake"

    def __init__(self, create_delay: float = 0.0, exec_delay: float = 0.0) -> None:
        self.create_delay = create_delay
        self.exec_delay = exec_delay
        self.failure: BaseException | None = None
        self.instances: dict[str, FakeInstance] = {}
        self.live = 0
        self.max_live = 0
        self.created = 0
        self.uploading = trio.Event()
        self.upload_gate = trio.Event()

    async def reset(self) -> None:
        return None

    async def create(self, sandbox_id: str) -> FakeInstance:
        await trio.sleep(self.create_delay)
        if self.failure is not None:
            raise self.failure
        instance = FakeInstance(self, sandbox_id)
        self.instances[sandbox_id] = instance
        self.created += 1
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        return instance


class RecordingFeature(Feature):
    """Records every hook call in `calls`; `fail[hook]` makes that hook raise it."""

    def __init__(
        self,
        name: str,
        calls: list[tuple[str, str, str, str | None]],
        *,
        fail: Mapping[str, BaseException] | None = None,
        delay: Mapping[str, float] | None = None,
        sandbox_scoped: bool = True,
        housekeep_interval: float | None = None,
    ) -> None:
        self.name = name
        self.calls = calls
        self.fail = dict(fail or {})
        self.delay = dict(delay or {})
        self.sandbox_scoped = sandbox_scoped
        self.housekeep_interval = housekeep_interval

    async def _record(self, hook: str, sandbox: Sandbox | None, session: Session | None) -> None:
        self.calls.append(
            (self.name, hook, sandbox.id if sandbox else "", session.id if session else None)
        )
        if hook in self.delay:
            await trio.sleep(self.delay[hook])
        if hook in self.fail:
            raise self.fail[hook]

    async def setup(self, sandbox: Sandbox | None) -> None:
        await self._record("setup", sandbox, None)

    async def teardown(self, sandbox: Sandbox | None) -> None:
        await self._record("teardown", sandbox, None)

    async def setup_session(self, sandbox: Sandbox, session: Session | None) -> None:
        await self._record("setup_session", sandbox, session)

    async def teardown_session(self, sandbox: Sandbox, session: Session) -> None:
        await self._record("teardown_session", sandbox, session)

    async def housekeep(self, sandbox: Sandbox | None) -> None:
        await self._record("housekeep", sandbox, None)


class RecordingHandler(EventHandler):
    """Records (callback name, args) for every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *args: object.__getattribute__(self, "events").append((name, args))
        return object.__getattribute__(self, name)

    def names(self) -> list[str]:
        return [name for name, _ in self.events]
