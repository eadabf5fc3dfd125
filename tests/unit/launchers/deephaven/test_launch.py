"""A launched server's readiness: how it waits between connects, when it gives up, and
when its credentials are handed out."""

from __future__ import annotations

import pytest
import trio

from supervisor.config.deephaven import PSK_HANDLER, DeephavenConfig
from supervisor.errors import DeephavenClientError, UnauthorizedError
from supervisor.launchers.deephaven.client import ConnectSpec
from supervisor.launchers.deephaven.launch import DeephavenHandle, DeephavenLauncher
from supervisor.supervision.resource import CheckResult
from supervisor.supervision.states import Liveness

CONFIG = DeephavenConfig.model_validate({"kind": "deephaven", "launch": "python"})


class FakeClient:
    """Answers `failures` connects with `code` (a server not up yet), then connects."""

    def __init__(self, failures: int, code: str = "UNAVAILABLE") -> None:
        self.failures = failures
        self.code = code
        self.attempts: list[float] = []
        self.connected = False
        self.alive = True

    async def connect(self, spec: ConnectSpec, timeout: float) -> None:
        self.attempts.append(trio.current_time())
        if len(self.attempts) <= self.failures:
            raise DeephavenClientError("connect: failed", code=self.code)
        self.connected = True

    async def mark_baseline(self, timeout: float) -> None:
        pass


def launched(client: FakeClient) -> DeephavenHandle:
    spec = ConnectSpec("127.0.0.1", 10000, PSK_HANDLER, token="k")
    return DeephavenHandle(spec, client, server=object())  # type: ignore[arg-type]


def launcher() -> DeephavenLauncher:
    # Nothing is spawned while the helper is alive: readiness only connects.
    return DeephavenLauncher("dh", None, log_context={})  # type: ignore[arg-type]


async def test_a_refused_connect_is_retried_every_250ms(autojump_clock: trio.abc.Clock) -> None:
    """A server that does not answer yet is asked again 0.25 s later, the first time too."""
    client = FakeClient(failures=3)
    await launcher().ready(CONFIG, launched(client))
    first = client.attempts[0]
    assert [t - first for t in client.attempts] == [0.0, 0.25, 0.5, 0.75]
    assert client.connected


async def test_a_refused_key_is_not_retried(autojump_clock: trio.abc.Clock) -> None:
    """UNAUTHENTICATED will not pass by waiting: readiness fails at once."""
    client = FakeClient(failures=1, code="UNAUTHENTICATED")
    with pytest.raises(UnauthorizedError):
        await launcher().ready(CONFIG, launched(client))
    assert len(client.attempts) == 1


async def test_credentials_are_handed_out_only_while_known_to_work(
    autojump_clock: trio.abc.Clock,
) -> None:
    """None before the server took them, then until a failed check, again after a passed
    one, and never once stopped."""
    handle = launched(FakeClient(failures=0))
    assert handle.credentials() is None
    assert handle.withheld == "not ready yet"
    await launcher().ready(CONFIG, handle)
    assert handle.credentials() is not None
    handle.checked(CheckResult(Liveness.UNAUTHORIZED, "refused"))
    assert handle.credentials() is None
    assert handle.withheld == "UNAUTHORIZED: refused"
    handle.checked(CheckResult(Liveness.ONLINE))
    assert handle.credentials() is not None
    handle.stopped = True
    assert handle.credentials() is None
    assert handle.withheld == "not running"
