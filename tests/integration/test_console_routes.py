"""What the console needs beyond part one, on a real daemon's TCP listener: the last
hour's counters, one resource's kept events, and gzip that leaves streams live."""

from __future__ import annotations

import itertools
import json
import zlib
from pathlib import Path

import trio

from supervisor.runtime.daemon import Daemon
from supervisor.supervision.states import State
from tests.integration.test_api import running, tcp

TOKEN = "console-routes-token"
CHATTY = """
[resources.chatty]
kind = "process"
command = ["sh", "-c", "trap 'echo got-usr1' USR1; echo started; while :; do sleep 1 & wait $!; done"]
log_output = true
stop_timeout = "2s"
"""


class RawStream:
    """One streamed GET read off the socket as it comes (chunked, maybe gzipped): no
    client library buffering in between."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.headers: dict[str, str] = {}
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)

    @classmethod
    async def get(cls, daemon: Daemon, path: str) -> RawStream:
        assert daemon.api is not None
        assert daemon.api.http_address is not None
        host, port = daemon.api.http_address
        raw = cls(await trio.open_tcp_stream(host, port))
        await raw.stream.send_all(
            f"GET {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {TOKEN}\r\n"
            "accept-encoding: gzip\r\n\r\n".encode()
        )
        while b"\r\n\r\n" not in raw.buffer:
            raw.buffer += await raw.stream.receive_some()
        head, raw.buffer = raw.buffer.split(b"\r\n\r\n", 1)
        for line in head.decode().split("\r\n")[1:]:
            key, _, value = line.partition(":")
            raw.headers[key.strip().lower()] = value.strip()
        return raw

    async def chunk(self) -> bytes:
        """The next chunk's bytes, decoded (gunzipped when the answer is)."""
        while b"\r\n" not in self.buffer:
            self.buffer += await self.stream.receive_some()
        size_line, rest = self.buffer.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(rest) < size + 2:
            rest += await self.stream.receive_some()
        data, self.buffer = rest[:size], rest[size + 2 :]
        if self.headers.get("content-encoding") == "gzip":
            return self.inflate.decompress(data)
        return data


MANY = "".join(
    f'[resources.r{i:03}]\nkind = "process"\ncommand = ["sleep", "1000"]\n' for i in range(60)
)


async def test_glance_counts_a_restart_in_this_minute_and_the_states_now(tmp_path: Path) -> None:
    """GET /v1/glance: 60 minutes, oldest first; a restart shows in the current minute,
    whose census counts the resources in each state."""
    async with running(tmp_path, CHATTY, token=TOKEN) as daemon, tcp(daemon, TOKEN) as api:
        before = (await api.get("/v1/glance")).json()["minutes"][-1]["restarts"]
        assert (await api.post("/v1/resources/chatty/restart", json={})).status_code == 202
        with trio.fail_after(10):
            await daemon.supervisors["chatty"].wait_for(
                lambda s: s.state is State.RUNNING and s.restarts == 1
            )
        minutes = (await api.get("/v1/glance")).json()["minutes"]
    assert len(minutes) == 60
    assert [b["start"] - a["start"] for a, b in itertools.pairwise(minutes)] == [60] * 59
    # The restart may straddle a minute's turn: count the last two minutes.
    assert minutes[-1]["restarts"] + minutes[-2]["restarts"] >= before + 1
    assert minutes[-1]["states"] == {"RUNNING": 1}


async def test_events_of_one_name_are_only_that_resources(tmp_path: Path) -> None:
    """GET /v1/events?follow=0&name=X answers X's kept transitions and no other's."""
    async with running(tmp_path, token=TOKEN) as daemon, tcp(daemon, TOKEN) as api:
        answer = (await api.get("/v1/events", params={"follow": "0", "name": "other"})).json()
    assert {e["name"] for e in answer["events"]} == {"other"}
    assert [e["to"] for e in answer["events"]] == ["STARTING", "RUNNING"]


async def test_large_answers_are_gzipped_small_ones_and_event_streams_are_not(
    tmp_path: Path,
) -> None:
    """With Accept-Encoding gzip: the console's modules and a big resource list come
    gzipped (and decode to the same bytes), a small answer and the SSE stream do not."""
    async with running(tmp_path, MANY, token=TOKEN) as daemon, tcp(daemon, TOKEN) as api:
        plain = await api.get("/v1/resources", headers={"accept-encoding": "identity"})
        zipped = await api.get("/v1/resources", headers={"accept-encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert "content-encoding" not in plain.headers

        # httpx decoded it; `since` is re-derived per answer (wall clock minus loop time),
        # so two answers may differ in its last millisecond: compare the rest.
        def steady(body: bytes) -> list[dict[str, object]]:
            return [
                {k: v for k, v in r.items() if k != "since"} for r in json.loads(body)["resources"]
            ]

        assert steady(zipped.content) == steady(plain.content)
        assert int(zipped.headers["content-length"]) < len(plain.content) / 4
        module = await api.get("/console/app.js", headers={"accept-encoding": "gzip"})
        assert module.headers["content-encoding"] == "gzip"
        small = await api.get("/healthz", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in small.headers
        with trio.fail_after(10):
            events = await RawStream.get(daemon, "/v1/events?since=0")
            async with events.stream:
                assert "content-encoding" not in events.headers
                assert b"event: transition" in await events.chunk()


async def test_a_followed_log_is_gzipped_and_still_arrives_live(tmp_path: Path) -> None:
    """A line printed after a gzipped follow started reaches the client while the stream
    is still open: every chunk is flushed, none waits for the end."""
    async with running(tmp_path, CHATTY, token=TOKEN) as daemon, tcp(daemon, TOKEN) as api:
        sup = daemon.supervisors["chatty"]
        with trio.fail_after(10):
            await sup.wait_for(lambda s: s.state is State.RUNNING)
        seen = b""
        with trio.fail_after(20):
            followed = await RawStream.get(daemon, "/v1/resources/chatty/logs?follow=1&lines=10")
            async with followed.stream:
                assert followed.headers["content-encoding"] == "gzip"
                while b"started" not in seen:
                    seen += await followed.chunk()
                signalled = await api.post("/v1/resources/chatty/signal", json={"signal": "USR1"})
                assert signalled.status_code == 202
                while b"got-usr1" not in seen:
                    seen += await followed.chunk()
    assert seen.index(b"started") < seen.index(b"got-usr1")
