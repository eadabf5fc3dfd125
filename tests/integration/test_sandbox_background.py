"""Background commands: a real daemon, real isolated `process` sandboxes, real HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio

from supervisor.api.client import Client
from tests.integration.test_sandbox_streaming import NDJSON, run, session


async def start(client: httpx.AsyncClient, sid: str, **body: Any) -> dict[str, Any]:
    answer = await client.post(f"/v1/sessions/{sid}/exec", json={**body, "background": True})
    assert answer.status_code == 202, answer.text
    started: dict[str, Any] = answer.json()
    return started


async def follow(client: httpx.AsyncClient, sid: str, cid: str, since: int = 0) -> list[Any]:
    path = f"/v1/sessions/{sid}/commands/{cid}/output?since={since}"
    async with client.stream("GET", path, headers=NDJSON) as response:
        assert response.status_code == 200
        with trio.fail_after(30):
            return [json.loads(line) async for line in response.aiter_lines() if line]


async def test_a_background_command_answers_at_once_and_is_followed(tmp_path: Path) -> None:
    """202 with a handle while it runs; its output so far, then followed to its end."""
    async with session(tmp_path) as (_, client, sid):
        await run(client, sid, command=["mkfifo", "gate"])
        started = await start(client, sid, script="echo first; read x < gate; echo second")
        cid = started["command_id"]
        assert started["state"] == "running"
        assert started["script"] == "echo first; read x < gate; echo second"
        listed = (await client.get(f"/v1/sessions/{sid}/commands")).json()["commands"]
        assert [c["command_id"] for c in listed] == [cid]
        # The daemon has read "first" (one piece) before the gate lets "second" out:
        # else, on a loaded machine, both can arrive in one read.
        url = f"/v1/sessions/{sid}/commands/{cid}"
        with trio.fail_after(30):
            while (await client.get(url)).json()["stdout"] != "first\n":  # noqa: ASYNC110
                await trio.sleep(0.02)
        await run(client, sid, script="echo go > gate")
        frames = await follow(client, sid, cid)
        assert [f["data"] for f in frames if "stream" in f] == ["first\n", "second\n"]
        assert frames[-1]["exit_code"] == 0
        shown = (await client.get(url)).json()
        assert (shown["state"], shown["exit_code"], shown["stdout"]) == (
            "exited",
            0,
            "first\nsecond\n",
        )
        rest = await follow(client, sid, cid, since=1)  # from the second piece on
        assert [f["data"] for f in rest if "stream" in f] == ["second\n"]


async def test_stdin_is_written_then_closed(tmp_path: Path) -> None:
    """Writes reach the command's stdin in order; closing it is its EOF."""
    async with session(tmp_path) as (_, client, sid):
        cid = (await start(client, sid, command=["cat"], stdin="one\n"))["command_id"]
        url = f"/v1/sessions/{sid}/commands/{cid}"
        assert (await client.post(url + "/stdin", json={"data": "two\n"})).status_code == 204
        closed = await client.post(url + "/stdin", json={"data": "three\n", "close": True})
        assert closed.status_code == 204
        frames = await follow(client, sid, cid)
        assert "".join(f["data"] for f in frames if "stream" in f) == "one\ntwo\nthree\n"
        assert frames[-1]["exit_code"] == 0
        late = await client.post(url + "/stdin", json={"data": "four\n"})
        assert late.status_code == 409


async def test_a_signal_reaches_the_process_group(tmp_path: Path) -> None:
    """TERM ends a command that waits; it is reported as ended by the signal."""
    async with session(tmp_path) as (_, client, sid):
        script = "trap 'echo got TERM; exit 3' TERM; echo ready; sleep 600 & wait"
        cid = (await start(client, sid, script=script))["command_id"]
        url = f"/v1/sessions/{sid}/commands/{cid}"
        async with client.stream("GET", url + "/output", headers=NDJSON) as response:
            lines = response.aiter_lines()
            with trio.fail_after(30):
                assert json.loads(await anext(lines))["data"] == "ready\n"
            answer = await client.post(url + "/signal", json={"signal": "TERM"})
            assert answer.status_code == 202
            with trio.fail_after(30):
                rest = [json.loads(line) async for line in lines if line]
        assert rest[0]["data"] == "got TERM\n"
        assert rest[-1]["exit_code"] == 3
        bad = await client.post(url + "/signal", json={"signal": "NOPE"})
        assert bad.status_code == 422


async def test_background_commands_end_with_the_session(tmp_path: Path) -> None:
    """Releasing the session stops its commands; they are gone with it (410)."""
    async with session(tmp_path) as (daemon, client, sid):
        cid = (await start(client, sid, command=["sleep", "600"]))["command_id"]
        command = daemon.sandbox_service.commands(sid).get(cid)
        assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 204
        with trio.fail_after(30):
            await command.done.wait()
        assert command.to_json()["state"] == "failed"
        assert "ended" in str(command.error)
        gone = await client.get(f"/v1/sessions/{sid}/commands")
        assert gone.status_code == 410


async def test_an_unknown_command_is_a_404(tmp_path: Path) -> None:
    """A command id the session never had is not found."""
    async with session(tmp_path) as (_, client, sid):
        answer = await client.get(f"/v1/sessions/{sid}/commands/cmd-9")
        assert answer.status_code == 404


async def test_the_python_client_drives_a_background_command(tmp_path: Path) -> None:
    """Client.start_command, write_stdin, follow_command and commands over the socket."""
    async with session(tmp_path) as (daemon, _, sid):
        assert daemon.api is not None
        socket_path = daemon.api.socket_path

        def drive() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            with Client.connect(socket_path=socket_path) as client:
                started = client.start_command(sid, ["cat"], env={"A": "1"})
                cid = started["command_id"]
                client.write_stdin(sid, cid, "hello\n", close=True)
                frames = list(client.follow_command(sid, cid))
                return frames, client.commands(sid)

        frames, listed = await trio.to_thread.run_sync(drive)
        assert frames[0] == {"stream": "stdout", "data": "hello\n"}
        assert frames[-1]["exit_code"] == 0
        assert listed[0]["state"] == "exited"
