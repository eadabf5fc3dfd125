"""The sandbox semantics, rule by rule (numbers from shared/reference/sandbox-semantics.md).

Pure logic over an in-memory backend, so virtual time (autojump_clock) is honest here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from supervisor.config.environment import EnvironmentConfig
from supervisor.errors import (
    EnvironmentOfflineError,
    EnvironmentOutageError,
    FeatureTeardownError,
    PoolOverloadedError,
    SandboxLostError,
    SandboxStateError,
    SessionExpiredError,
    SessionTeardownError,
)
from supervisor.sandbox.environment import Environment, open_environment
from supervisor.sandbox.features import Feature
from supervisor.sandbox.instance import ExecOptions
from supervisor.sandbox.status import EnvironmentStatus, SandboxStatus
from supervisor.supervision.states import Event
from tests.fakes import FakeBackend, RecordingFeature, RecordingHandler

S = SandboxStatus
Calls = list[tuple[str, str, str, str | None]]


def settings(**overrides: Any) -> EnvironmentConfig:
    base: dict[str, Any] = {
        "min_ready": 1,
        "max_size": 2,
        "acquire_timeout": 5,
        "housekeep_interval": 10,
        "keepalive_interval": 5,
        "outage_grace": 30,
        "outage_retry_interval": 5,
    }
    return EnvironmentConfig.model_validate({**base, **overrides})


@asynccontextmanager
async def environment(
    backend: FakeBackend | None = None,
    features: Sequence[Feature] = (),
    handler: RecordingHandler | None = None,
    **overrides: Any,
) -> AsyncIterator[Environment]:
    async with open_environment(
        "env",
        settings(**overrides),
        backend or FakeBackend(),
        features,
        handlers=[handler] if handler else [],
    ) as env:
        yield env


def statuses(handler: RecordingHandler, sandbox_id: str) -> list[str]:
    """The statuses a sandbox went through, from its status_change events."""
    seen: list[str] = []
    for name, args in handler.events:
        if name == "on_sandbox_status_change" and args[0].id == sandbox_id:
            if not seen:
                seen.append(args[1].value)
            seen.append(args[2].value)
    return seen


async def until(env: Environment, predicate: Any, timeout: float = 60.0) -> None:
    """Wait (bounded, virtual time) until `predicate()` holds, re-checking after each event."""
    changed = trio.Event()

    def wake(_: Event) -> None:
        changed.set()

    remove = env.bus.add_listener(wake)
    try:
        with trio.fail_after(timeout):
            while not predicate():
                await changed.wait()
                changed = trio.Event()
    finally:
        remove()


# -- sandbox lifecycle -----------------------------------------------------------------


async def test_rule_01_start_runs_backend_setup_then_proactive_session_setup_then_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CREATED -> SETTING_UP -> READY, features in declaration order, then sandbox_start."""
    calls: Calls = []
    handler = RecordingHandler()
    features = [RecordingFeature("a", calls), RecordingFeature("b", calls)]
    async with environment(features=features, handler=handler, max_size=1) as env:
        sandbox_id = "env/0:0"
        assert statuses(handler, sandbox_id) == ["CREATED", "SETTING_UP", "READY"]
        assert [(f, h) for f, h, _, _ in calls] == [
            ("a", "setup"),
            ("b", "setup"),
            ("a", "setup_session"),
            ("b", "setup_session"),
        ]
        names = handler.names()
        ready_at = next(
            i
            for i, (n, a) in enumerate(handler.events)
            if n == "on_sandbox_status_change" and a[2] is S.READY
        )
        assert names.index("on_sandbox_start") > ready_at
        assert env.stats()["sandboxes"]["READY"] == 1


async def test_rule_02_teardown_pairs_with_every_attempted_setup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A feature is recorded before its setup runs, so the failing one is torn down too."""
    calls: Calls = []
    features = [
        RecordingFeature("a", calls),
        RecordingFeature("b", calls, fail={"setup": ValueError("b broke")}),
        RecordingFeature("c", calls),
    ]
    with pytest.raises(ValueError, match="b broke"):
        async with environment(features=features):
            pass
    torn_down = [f for f, h, _, _ in calls if h == "teardown"]
    assert torn_down == ["b", "a"]


async def test_rule_03_start_failure_emits_event_shuts_down_and_records_state_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A state error during start: sandbox_start(error), OFFLINE, recorded, outage clock."""
    backend = FakeBackend()
    handler = RecordingHandler()
    calls: Calls = []
    broken = RecordingFeature("x", calls, fail={"setup": SandboxStateError("disk gone")})
    async with environment(backend, [broken], handler, min_ready=1) as env:
        start = [a for n, a in handler.events if n == "on_sandbox_start"]
        assert isinstance(start[0][2], SandboxStateError)
        assert statuses(handler, "env/0:0")[-1] == "OFFLINE"
        assert backend.live == 0
        assert env.status is EnvironmentStatus.ONLINE  # a partial failure is an outage
        assert env.stats()["offline_duration"] >= 0
        assert env.error is not None


async def test_rule_04_acquire_hands_a_ready_sandbox_to_exactly_one_caller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two concurrent acquires of one READY sandbox: one gets it, the other another one."""
    async with environment(min_ready=1, max_size=2) as env:
        got: list[Any] = []
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(lambda: _append(got, env.acquire()))
        assert len({id(s) for s in got}) == 2
        assert all(s.status is S.ACQUIRED for s in got)


async def _append(out: list[Any], coro: Any) -> None:
    out.append(await coro)


async def test_rule_05_failed_session_setup_still_pairs_teardown_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(fix) teardown_session runs for each feature whose setup_session was attempted."""
    calls: Calls = []
    features = [
        RecordingFeature("a", calls),
        RecordingFeature("b", calls, fail={"setup_session": ValueError("no")}),
        RecordingFeature("c", calls),
    ]
    handler = RecordingHandler()
    async with environment(
        features=features, handler=handler, proactive_session_setup=False
    ) as env:
        with pytest.raises(ValueError, match="no"):
            await env.open_session()
        torn = [f for f, h, _, s in calls if h == "teardown_session"]
        assert torn == ["a", "b"]
        starts = [a for n, a in handler.events if n == "on_session_start"]
        assert isinstance(starts[-1][3], ValueError)
        assert statuses(handler, "env/0:0")[-1] == "OFFLINE"


async def test_rule_06_state_error_in_client_work_condemns_the_sandbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A state error escaping the session: torn down, shut down, re-raised."""
    backend = FakeBackend()
    async with environment(backend, min_ready=1, max_size=1) as env:
        with pytest.raises(SandboxStateError):
            async with env.session() as session:
                backend.instances[session.sandbox.id].break_()
                await session.exec(["true"])
        assert session.sandbox.status is S.OFFLINE
        await until(env, lambda: env.stats()["sandboxes"]["READY"] == 1)  # replaced: env/0:1
        assert "env/0:1" in backend.instances


async def test_rule_06_user_error_in_client_work_keeps_the_sandbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A user error leaves the sandbox reusable."""
    async with environment(min_ready=1, max_size=1, proactive_session_setup=False) as env:
        with pytest.raises(ValueError, match="bad input"):
            async with env.session() as session:
                await session.exec(["user-error"])
        assert session.sandbox.status is S.READY
        async with env.session() as again:
            assert again.sandbox is session.sandbox


async def test_rule_07_end_session_is_idempotent_and_runs_every_teardown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every teardown_session runs even when one fails; errors come back per feature."""
    calls: Calls = []
    features = [
        RecordingFeature("a", calls, fail={"teardown_session": ValueError("a")}),
        RecordingFeature("b", calls, fail={"teardown_session": KeyError("b")}),
        RecordingFeature("c", calls),
    ]
    async with environment(features=features, max_size=1) as env:
        session = await env.open_session()
        with pytest.raises(SessionTeardownError) as caught:
            await env.close_session(session)
        assert set(caught.value.errors) == {"a", "b"}
        assert [f for f, h, _, _ in calls if h == "teardown_session"] == ["a", "b", "c"]
        await env.close_session(session)  # again: a no-op
        assert [f for f, h, _, _ in calls if h == "teardown_session"] == ["a", "b", "c"]


async def test_rule_08_teardown_session_user_error_shuts_the_sandbox_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(fix) the sandbox is not returned to READY after a failed teardown_session."""
    calls: Calls = []
    features = [RecordingFeature("a", calls, fail={"teardown_session": ValueError("dirty")})]
    async with environment(features=features, max_size=1) as env:
        session = await env.open_session()
        with pytest.raises(SessionTeardownError):
            await env.close_session(session)
        assert session.sandbox.status is S.OFFLINE


async def test_rule_08_state_error_ends_session_quietly_and_is_not_reused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A recorded state error: session-end carries it, nothing is raised, sandbox retired."""
    handler = RecordingHandler()
    async with environment(handler=handler, max_size=1) as env:
        session = await env.open_session()
        session.sandbox.record(SandboxStateError("flaky disk"))
        await env.close_session(session)
        end = next(a for n, a in handler.events if n == "on_session_end")
        assert isinstance(end[4], SandboxStateError)
        assert session.sandbox.status is S.OFFLINE


async def test_rule_08_recycle_due_after_max_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sandbox that served max_sessions_per_sandbox is shut down at session end."""
    async with environment(max_size=1, max_sessions_per_sandbox=2) as env:
        first = None
        for _ in range(2):
            async with env.session() as session:
                first = first or session.sandbox
        assert first is not None
        assert first.status is S.OFFLINE


async def test_rule_09_session_end_event_precedes_the_status_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """session_end fires before EXITING_SESSION -> READY/SETTING_UP."""
    handler = RecordingHandler()
    async with environment(handler=handler, max_size=1, proactive_session_setup=False) as env:
        async with env.session():
            pass
        names = [
            (n, a[2].value if n == "on_sandbox_status_change" else None) for n, a in handler.events
        ]
        end = names.index(("on_session_end", None))
        back = names.index(("on_sandbox_status_change", "READY"), end - 1)
        assert end < back
        assert names[end - 1] == ("on_sandbox_status_change", "EXITING_SESSION")


async def test_rule_10_shutdown_during_proactive_setup_never_returns_to_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(fix) a proactive setup in flight when shutdown begins cannot resurrect the sandbox."""
    calls: Calls = []
    slow = RecordingFeature("slow", calls, delay={"setup_session": 5.0})
    handler = RecordingHandler()
    async with environment(features=[slow], handler=handler, max_size=1) as env:
        session = await env.open_session()
        sandbox = session.sandbox
        await env.close_session(session)
        assert sandbox.status is S.SETTING_UP  # proactive setup for the next session
        await sandbox.shutdown()
        await trio.sleep(10)  # well past when the setup would have finished
        assert sandbox.status is S.OFFLINE
        assert "READY" not in statuses(handler, sandbox.id)[-3:]


async def test_rule_11_a_new_session_keeps_its_own_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(fix) proactive setup never runs on a session that started after it."""
    calls: Calls = []
    feature = RecordingFeature("f", calls, delay={"setup_session": 1.0})
    async with environment(features=[feature], max_size=1, min_ready=1) as env:
        first = await env.open_session()
        await env.close_session(first)
        second = await env.open_session()  # waits until the proactive setup is done
        assert second.sandbox.status is S.IN_SESSION
        await second.exec(["set", "k", "v"])
        setups_before = sum(h == "setup_session" for _, h, _, _ in calls)
        await trio.sleep(5)
        assert sum(h == "setup_session" for _, h, _, _ in calls) == setups_before
        assert (await second.exec(["get"])).stdout == "k=v"
        assert second.sandbox.status is S.IN_SESSION
        await env.close_session(second)


async def test_rule_12_keepalive_state_error_shuts_the_sandbox_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A failing keepalive probe condemns the sandbox and ends its live session."""
    backend = FakeBackend()
    async with environment(backend, max_size=1, keepalive_interval=2) as env:
        session = await env.open_session()
        backend.instances[session.sandbox.id].break_()
        await until(env, lambda: session.sandbox.status is S.OFFLINE)
        assert session.ended
        with pytest.raises(SessionExpiredError):
            await session.exec(["true"])


async def test_rule_12_user_error_in_feature_housekeep_does_not_stop_housekeeping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(fix) a raising housekeep is logged and counted; the loop keeps going."""
    calls: Calls = []
    feature = RecordingFeature(
        "hk", calls, fail={"housekeep": ValueError("oops")}, housekeep_interval=1.0
    )
    async with environment(features=[feature], max_size=1) as env:
        await trio.sleep(5.5)
        assert sum(h == "housekeep" for _, h, _, _ in calls) == 5
        assert env.stats()["sandboxes"]["READY"] == 1


async def test_rule_12_a_dead_sandbox_is_noticed_from_its_death_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Death reported by the backend (no waiting for a probe): shut down and replaced."""
    backend = FakeBackend()
    async with environment(backend, max_size=1, keepalive_interval=3600) as env:
        backend.instances["env/0:0"].dead.set()
        await until(env, lambda: "env/0:1" in backend.instances)
        assert env.stats()["sandboxes"]["READY"] == 1


async def test_rule_12_a_sandbox_whose_node_is_lost_ends_its_session_as_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A backend that reports the sandbox's place lost (SandboxLostError from its death
    watch) ends the session with reason and outcome `lost`; later calls get
    SessionExpiredError (410); the sandbox is replaced."""
    backend = FakeBackend()
    ended: list[str] = []
    async with environment(backend, max_size=1, keepalive_interval=3600) as env:
        env.bus.add_listener(
            lambda t: (
                ended.append(t.reason) if (t.subject, t.to_state) == ("session", "ended") else None
            )
        )
        async with env.session() as session:
            instance = backend.instances[session.sandbox.id]
            instance.lost = True
            instance.dead.set()
            await session.ended_event.wait()
            assert session.end_reason == "lost"
            with pytest.raises(SessionExpiredError, match="lost"):
                await session.exec(["true"])
            assert isinstance(session.sandbox.state_error, SandboxLostError)
        await until(env, lambda: "env/0:1" in backend.instances)
    assert ended == ["lost"]


# -- environment and pool --------------------------------------------------------------


async def test_rule_13_min_ready_sandboxes_come_up_at_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ONLINE once the first start was attempted for each of min_ready sandboxes."""
    backend = FakeBackend(create_delay=1.0)
    async with environment(backend, min_ready=3, max_size=5) as env:
        assert env.status is EnvironmentStatus.ONLINE
        assert env.stats()["sandboxes"]["READY"] == 3
        assert trio.current_time() == pytest.approx(1.0)  # concurrently, not one by one


async def test_rule_14_max_size_zero_gives_a_fresh_sandbox_per_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each session gets a new sandbox, shut down at its end or with the environment."""
    backend = FakeBackend()
    env_ref: list[Environment] = []
    async with environment(backend, min_ready=0, max_size=0) as env:
        env_ref.append(env)
        async with env.session() as one:
            pass
        assert one.sandbox.status is S.OFFLINE
        kept = await env.open_session()  # still in use when the environment goes
    assert kept.sandbox.status is S.OFFLINE  # (fix) tracked and shut down
    assert backend.live == 0


async def test_rule_15_fifty_concurrent_acquires_never_make_a_fifth_sandbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(fix) max_size holds under concurrency."""
    backend = FakeBackend(create_delay=0.5, exec_delay=0.1)
    async with environment(backend, min_ready=0, max_size=4, acquire_timeout=60) as env:

        async def client() -> None:
            async with env.session() as session:
                await session.exec(["true"])

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(client)
        assert backend.max_live <= 4
        assert backend.created == 4


async def test_rule_15_waiters_are_served_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(fix) FIFO, woken by the release event rather than by polling."""
    async with environment(min_ready=1, max_size=1, proactive_session_setup=False) as env:
        holder = await env.open_session()
        order: list[int] = []

        async def waiter(i: int) -> None:
            async with env.session():
                order.append(i)
                await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(waiter, i)
                await trio.sleep(0.01)  # arrive in a known order
            released_at = trio.current_time()
            await env.close_session(holder)
        assert order == [0, 1, 2, 3, 4]
        assert trio.current_time() - released_at == pytest.approx(0.5, abs=0.01)


async def test_rule_16_at_max_with_nothing_ready_an_acquire_times_out_as_overload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After acquire_timeout: PoolOverloadedError with a retry hint."""
    async with environment(min_ready=1, max_size=1, acquire_timeout=3) as env:
        holder = await env.open_session()
        started = trio.current_time()
        with pytest.raises(PoolOverloadedError) as caught:
            await env.acquire()
        assert trio.current_time() - started == pytest.approx(3.0)
        assert caught.value.retry_after is not None
        await env.close_session(holder)


async def test_rule_17_outage_after_grace_then_recovery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """State errors start the clock; past the grace acquires fail fast; success clears it."""
    backend = FakeBackend()
    backend.failure = SandboxStateError("engine down")
    async with environment(
        backend, min_ready=1, max_size=1, outage_grace=20, outage_retry_interval=5
    ) as env:
        with pytest.raises(PoolOverloadedError):
            await env.acquire(timeout=1)
        await trio.sleep(25)
        assert env.stats()["outage"]
        started = trio.current_time()
        with pytest.raises(EnvironmentOutageError):
            await env.acquire()
        assert trio.current_time() == started  # fast
        backend.failure = None
        await until(env, lambda: env.stats()["sandboxes"]["READY"] == 1)
        assert not env.stats()["outage"]
        assert env.stats()["offline_duration"] == 0


async def test_rule_17_user_error_during_bring_up_goes_to_the_caller_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A user error is returned without retries or outage accounting."""
    backend = FakeBackend()
    async with environment(backend, min_ready=0, max_size=1) as env:
        backend.failure = ValueError("bad image name")
        started = trio.current_time()
        with pytest.raises(ValueError, match="bad image"):
            await env.acquire()
        assert trio.current_time() == started
        assert env.offline_duration == 0


async def test_rule_18_housekeeping_replaces_recycles_and_shrinks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Dead slots get generation+1; old sandboxes recycle; idle extras shrink to min_ready."""
    backend = FakeBackend()
    handler = RecordingHandler()
    async with environment(
        backend,
        handler=handler,
        min_ready=1,
        max_size=3,
        housekeep_interval=1,
        idle_timeout=5,
        max_sandbox_age=30,
        keepalive_interval=3600,
    ) as env:
        sessions = [await env.open_session() for _ in range(3)]
        for session in sessions:
            await env.close_session(session)
        await until(env, lambda: env.stats()["sandboxes"]["READY"] == 3)
        await trio.sleep(7)  # idle past idle_timeout: shrink to min_ready
        assert env.stats()["sandboxes"]["READY"] == 1
        await trio.sleep(30)  # past max_sandbox_age: recycled, replaced in its slot
        assert env.stats()["sandboxes"]["READY"] == 1
        assert any(sid.startswith("env/") and not sid.endswith(":0") for sid in backend.instances)
        counts = [a[4] for n, a in handler.events if n == "on_environment_housekeep"]
        assert sum(c["shrunk"] for c in counts) == 2
        assert sum(c["recycled"] for c in counts) >= 1
        assert sum(c["replaced"] for c in counts) >= 1


async def test_rule_19_an_expired_lease_ends_the_session_and_retires_the_sandbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A vanished client: at lease expiry its sandbox is shut down, not reused."""
    async with environment(min_ready=1, max_size=1) as env:
        session = await env.open_session(lease=10)
        await trio.sleep(6)
        session.heartbeat()  # moves the lease to t=16
        await trio.sleep(6)
        assert not session.ended
        await trio.sleep(5)
        assert session.expired
        assert session.sandbox.status is S.OFFLINE
        with pytest.raises(SessionExpiredError):
            session.heartbeat()
        await until(env, lambda: env.stats()["sandboxes"]["READY"] == 1)


async def test_rule_19_the_ttl_is_absolute(autojump_clock: trio.testing.MockClock) -> None:
    """Heartbeats never stretch a session past its TTL."""
    async with environment(min_ready=1, max_size=1) as env:
        session = await env.open_session(ttl=10, lease=4)
        for _ in range(3):
            await trio.sleep(3)
            session.heartbeat()
        await session.ended_event.wait()
        assert session.expired
        assert trio.current_time() == pytest.approx(10.0)


async def test_a_running_command_holds_the_lease(autojump_clock: trio.testing.MockClock) -> None:
    """No heartbeat needed while a command runs; the lease restarts when it finishes."""
    async with environment(min_ready=1, max_size=1) as env:
        session = await env.open_session(lease=4)
        result = await session.exec(["later", "30", "k", "v"], timeout=60)
        assert result.exit_code == 0
        assert not session.ended
        assert session.to_json()["running"] == 0
        finished = trio.current_time()
        await session.ended_event.wait()
        assert session.expired
        assert trio.current_time() - finished == pytest.approx(4.0)


async def test_a_background_command_does_not_hold_the_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Its client may be gone: without heartbeats the session ends at the lease, and the
    command with it."""
    async with environment(min_ready=1, max_size=1) as env:
        session = await env.open_session(lease=4)
        background = ExecOptions(background=True)
        with pytest.raises(SessionExpiredError):
            await session.exec(["later", "30", "k", "v"], timeout=60, options=background)
        assert trio.current_time() == pytest.approx(4.0)


async def test_a_running_command_does_not_outlive_the_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The TTL still bounds everything: the command is cut short at it."""
    async with environment(min_ready=1, max_size=1) as env:
        session = await env.open_session(ttl=10, lease=4)
        with pytest.raises(SessionExpiredError):
            await session.exec(["later", "30", "k", "v"], timeout=60)
        assert trio.current_time() == pytest.approx(10.0)
        await session.ended_event.wait()
        assert session.expired


async def test_rule_20_shutdown_ends_sessions_stops_promptly_and_goes_offline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Housekeeping stops at once; live sessions end; everything reaches OFFLINE."""
    backend = FakeBackend()
    calls: Calls = []
    env_feature = RecordingFeature("global", calls, sandbox_scoped=False)
    async with environment(
        backend, [env_feature], min_ready=2, max_size=3, housekeep_interval=3600
    ) as env:
        session = await env.open_session()
        started = trio.current_time()
    assert trio.current_time() - started < 1  # not a housekeeping interval
    assert session.ended
    assert env.status is EnvironmentStatus.OFFLINE
    assert backend.live == 0
    assert [h for f, h, _, _ in calls if f == "global"] == ["setup", "teardown"]
    with pytest.raises(EnvironmentOfflineError):
        await env.acquire()


async def test_rule_21_stats_count_every_status_waiters_and_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """stats(): the 8 statuses, waiters, active sessions, offline duration."""
    async with environment(min_ready=2, max_size=2, proactive_session_setup=False) as env:
        one = await env.open_session()
        stats = env.stats()
        assert set(stats["sandboxes"]) == {s.value for s in S}
        assert stats["sandboxes"]["IN_SESSION"] == 1
        assert stats["sandboxes"]["READY"] == 1
        assert stats["active_sessions"] == 1
        assert stats["waiters"] == 0
        await env.close_session(one)


async def test_rule_22_ids(autojump_clock: trio.testing.MockClock) -> None:
    """Sandbox ids are env/slot:generation; session ids <hint>-session-<hex>, unique."""
    async with environment(min_ready=1, max_size=1) as env:
        ids = set()
        for _ in range(20):
            async with env.session() as session:
                assert session.sandbox.id == "env/0:0"
                assert re.fullmatch(r"env-session-[0-9a-f]{12}", session.id)
                ids.add(session.id)
        assert len(ids) == 20


async def test_a_raising_handler_never_blocks_a_transition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(fix) handler errors are logged and counted; the status change happens."""

    class Raising(RecordingHandler):
        def __getattribute__(self, name: str) -> Any:
            if name.startswith("on_"):

                def boom(*args: Any) -> None:
                    raise RuntimeError("handler bug")

                return boom
            return object.__getattribute__(self, name)

    async with environment(handler=Raising(), min_ready=1, max_size=1) as env:
        async with env.session() as session:
            assert session.sandbox.status is S.IN_SESSION
        assert env.bus.listener_errors > 5


async def test_feature_teardown_errors_are_aggregated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Shutdown runs every teardown and raises FeatureTeardownError naming each failure."""
    calls: Calls = []
    features = [
        RecordingFeature("a", calls, fail={"teardown": ValueError("a")}),
        RecordingFeature("b", calls, fail={"teardown": ValueError("b")}),
    ]
    async with environment(features=features, max_size=1) as env:
        session = await env.open_session()
        sandbox = session.sandbox
        await env.close_session(session)
        await until(env, lambda: sandbox.status is S.READY)
        with pytest.raises(FeatureTeardownError) as caught:
            await sandbox.shutdown()
        assert set(caught.value.errors) == {"a", "b"}


def test_settings_reject_min_ready_above_max_size() -> None:
    """Config: min_ready <= max_size, and max_size 0 needs min_ready 0."""
    with pytest.raises(ValueError, match="min_ready"):
        settings(min_ready=3, max_size=2)
    with pytest.raises(ValueError, match="max_size = 0"):
        settings(min_ready=1, max_size=0)


# -- found in review: each pins a defect that was fixed ----------------------------------


async def test_an_outage_ends_when_the_backend_comes_back_even_with_max_size_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Past the grace acquires fail fast, but one per retry interval still tries."""
    backend = FakeBackend()
    backend.failure = SandboxStateError("engine down")
    async with environment(
        backend, min_ready=0, max_size=0, outage_grace=10, outage_retry_interval=5
    ) as env:
        for attempt in range(3):  # at t = 0, 5, 10: the last one is the outage's trial
            if attempt:
                await trio.sleep(5)
            with pytest.raises(SandboxStateError):
                await env.acquire()
        assert env.in_outage
        with pytest.raises(EnvironmentOutageError):
            await env.acquire()  # fails fast until the next trial is due
        backend.failure = None
        await trio.sleep(5)  # the next trial is due
        async with env.session() as session:
            assert session.sandbox.id == "env/e3:0"  # one-session sandboxes have their own ids
        assert not env.in_outage


async def test_a_ready_sandbox_is_served_during_an_outage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Failed growth declares an outage, but an idle sandbox still goes to the next caller."""
    backend = FakeBackend()
    async with environment(
        backend, min_ready=1, max_size=2, outage_grace=5, outage_retry_interval=2
    ) as env:
        holder = await env.open_session()
        backend.failure = SandboxStateError("engine down")
        with pytest.raises(EnvironmentOutageError):
            await env.acquire(timeout=8)  # growth fails until the grace is over
        assert env.in_outage
        await env.close_session(holder)
        await until(env, lambda: env.stats()["sandboxes"]["READY"] == 1)
        async with env.session() as session:
            assert session.sandbox is holder.sandbox


async def test_client_work_still_running_is_stopped_when_its_session_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A release cancels the session's running command before cleaning up: the next
    session on the same sandbox never sees what it would have left."""
    backend = FakeBackend()
    async with environment(backend, min_ready=1, max_size=1) as env:
        first = await env.open_session()
        outcome: list[BaseException] = []

        async def slow() -> None:
            try:
                await first.exec(["later", "5", "k", "leaked"])
            except SessionExpiredError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            await trio.sleep(1)
            await env.close_session(first)
        assert outcome  # the client learns its command was cut short
        second = await env.open_session()
        await trio.sleep(10)
        assert (await second.exec(["get"])).stdout == ""
        await env.close_session(second)


async def test_a_cancelled_acquire_gives_its_sandbox_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelled on the fast path: the sandbox is READY again, not lost to the pool."""
    async with environment(min_ready=1, max_size=1) as env:
        with trio.CancelScope() as scope:
            scope.cancel()
            await env.acquire()
        assert env.stats()["sandboxes"]["READY"] == 1


async def test_a_session_whose_sandbox_is_condemned_is_no_longer_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Housekeeping shuts a sandbox down under a session: the session ends and is dropped."""
    backend = FakeBackend()
    async with environment(backend, max_size=1, keepalive_interval=2) as env:
        session = await env.open_session()
        backend.instances[session.sandbox.id].break_()
        await until(env, lambda: session.sandbox.status is S.OFFLINE)
        await trio.lowlevel.checkpoint()
        assert env.stats()["active_sessions"] == 0
        assert session.end_reason == "sandbox_failed"


async def test_a_session_shows_its_servers_endpoint_and_never_its_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sandbox that is a server (host and port in its connection) gives its session an
    `endpoint`, without the token; other sandboxes give none, and a lost instance none."""
    async with environment(min_ready=1, max_size=1) as env:
        session = await env.open_session()
        assert session.to_json()["endpoint"] is None
        instance = session.sandbox.instance
        assert instance is not None
        server = {"host": "127.0.0.1", "port": 10000, "auth_type": "psk", "token": "s3cret"}
        instance.connection = lambda: server  # type: ignore[method-assign]
        shown = session.to_json()
        assert shown["endpoint"] == "127.0.0.1:10000"
        assert "s3cret" not in repr(shown)
        session.sandbox.instance = None
        assert session.to_json()["endpoint"] is None
        session.sandbox.instance = instance
