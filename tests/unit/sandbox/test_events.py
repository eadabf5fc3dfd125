"""Event handlers as a subscriber of the bus (supervisor/sandbox/events.py).

Real environments over the in-memory backend of tests/fakes.py, on virtual time.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from supervisor.config.environment import EnvironmentConfig
from supervisor.sandbox.environment import Environment, open_environment
from supervisor.sandbox.events import EventHandler
from supervisor.sandbox.status import SandboxStatus
from supervisor.supervision.bus import EventBus
from tests.fakes import FakeBackend, RecordingFeature, RecordingHandler

S = SandboxStatus


def settings(**overrides: Any) -> EnvironmentConfig:
    return EnvironmentConfig.model_validate({"min_ready": 1, "max_size": 1, **overrides})


async def test_a_handler_gets_the_callbacks_with_the_semantics_pages_arguments(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each event becomes its callback: statuses as enums, each feature hook its own."""
    handler = RecordingHandler()
    calls: list[tuple[str, str, str, str | None]] = []
    feature = RecordingFeature("f", calls)
    async with (
        open_environment("env", settings(), FakeBackend(), [feature], handlers=[handler]) as env,
        env.session() as session,
    ):
        await session.exec(["true"])
    by_name = dict(handler.events)  # the last call of each
    sandbox, old, new, span = by_name["on_sandbox_status_change"]
    assert (sandbox.id, old, new, span) == ("env/0:0", S.SHUTTING_DOWN, S.OFFLINE, 0)
    assert by_name["on_session_activity"][1:3] == ("exec", session)
    assert by_name["on_session_activity"][5] == {"argv": ["true"]}
    assert by_name["on_feature_teardown_session"][1:3] == (feature, session)
    assert by_name["on_feature_teardown"][:2] == (sandbox, feature)
    assert by_name["on_environment_shutdown"][0] is env
    assert {"on_environment_starting", "on_environment_status", "on_session_end"} <= set(by_name)


async def test_a_handler_sees_only_the_events_of_its_own_environment(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two environments on one bus: each handler hears its environment alone."""
    bus = EventBus()
    mine, theirs = RecordingHandler(), RecordingHandler()
    async with (
        open_environment("a", settings(), FakeBackend(), handlers=[mine], bus=bus) as a,
        open_environment("b", settings(), FakeBackend(), handlers=[theirs], bus=bus),
        a.session(),
    ):
        pass
    assert "on_session_start" in mine.names()
    assert "on_session_start" not in theirs.names()
    assert {args[0].name for name, args in theirs.events if name == "on_environment_start"} == {"b"}


async def test_handlers_listen_only_while_their_environment_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Built but never started (a reload's dry check), or shut down: no listener is left."""
    bus = EventBus(history=0)  # idle exactly while nobody listens
    Environment("checked", settings(), FakeBackend(), handlers=[RecordingHandler()], bus=bus)
    assert bus.idle
    async with open_environment(
        "env", settings(), FakeBackend(), handlers=[EventHandler()], bus=bus
    ):
        assert not bus.idle
    assert bus.idle


async def test_a_raising_handler_is_counted_and_the_next_one_still_hears(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(fix) a handler's error is logged and counted by the bus; nothing else is skipped."""

    class Raising(EventHandler):
        def on_sandbox_status_change(self, *args: Any) -> None:
            raise RuntimeError("handler bug")

    bus, after = EventBus(), RecordingHandler()
    async with open_environment(
        "env", settings(), FakeBackend(), handlers=[Raising(), after], bus=bus
    ) as env:
        assert env.stats()["sandboxes"]["READY"] == 1
    changes = after.names().count("on_sandbox_status_change")
    assert changes == 4  # CREATED -> SETTING_UP -> READY -> SHUTTING_DOWN -> OFFLINE
    assert bus.listener_errors == changes
