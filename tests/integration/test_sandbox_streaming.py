"""Streamed exec and per-exec env, cwd and stdin: a real daemon, real isolated `process`
sandboxes, real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from supervisor.runtime.daemon import Daemon
from tests.integration.conftest import run_cli
from tests.integration.test_api import unix
from tests.integration.test_sandbox_api import acquire, daemon_with, env_config

NDJSON = {"accept": "application/x-ndjson"}


@asynccontextmanager
async def session(
    tmp_path: Path, settings: str = ""
) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient, str]]:
    """A daemon with one process environment (plus `settings`), a client, a session."""
    config = env_config().replace('acquire_timeout = "5s"\n', f'acquire_timeout = "5s"\n{settings}')
    async with daemon_with(tmp_path, config) as daemon, unix(daemon) as client:
        answer = await acquire(client)
        assert answer.status_code == 201, answer.text
        yield daemon, client, answer.json()["session_id"]


async def run(client: httpx.AsyncClient, sid: str, **body: Any) -> Any:
    answer = await client.post(f"/v1/sessions/{sid}/exec", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def frames(client: httpx.AsyncClient, sid: str, **body: Any) -> list[dict[str, Any]]:
    async with client.stream(
        "POST", f"/v1/sessions/{sid}/exec", json=body, headers=NDJSON
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) async for line in response.aiter_lines() if line]


def joined(found: list[dict[str, Any]], stream: str) -> str:
    return "".join(f["data"] for f in found if f.get("stream") == stream)


async def test_the_first_line_arrives_before_the_command_ends(tmp_path: Path) -> None:
    """Output is sent as it comes: the client reads a line while the command still waits."""
    async with session(tmp_path) as (_, client, sid):
        assert (await run(client, sid, command=["mkfifo", "gate"]))["exit_code"] == 0
        script = "echo first; read line < gate; echo second; echo done >&2; exit 4"
        async with client.stream(
            "POST", f"/v1/sessions/{sid}/exec", json={"script": script}, headers=NDJSON
        ) as response:
            lines = response.aiter_lines()
            with trio.fail_after(15):
                assert json.loads(await anext(lines)) == {"stream": "stdout", "data": "first\n"}
            # Only now does the command get past its gate.
            await run(client, sid, script="echo go > gate")
            rest = [json.loads(line) async for line in lines if line]
        assert joined(rest, "stdout") == "second\n"
        assert joined(rest, "stderr") == "done\n"
        final = rest[-1]
        assert final["exit_code"] == 4
        assert final["timed_out"] is False
        assert final["truncated"] is False
        assert final["duration_s"] > 0
        assert set(final) == {"exit_code", "duration_s", "timed_out", "truncated"}


async def test_a_character_split_across_reads_is_whole(tmp_path: Path) -> None:
    """A multibyte character written in two halves arrives as one character."""
    async with session(tmp_path) as (_, client, sid):
        # "é" is c3 a9: the halves are written (and read) apart, around a gate.
        await run(client, sid, command=["mkfifo", "gate"])
        script = r"printf '\303'; read line < gate; printf '\251\n'"
        async with trio.open_nursery() as nursery:
            found: list[dict[str, Any]] = []

            async def stream() -> None:
                found.extend(await frames(client, sid, script=script))

            nursery.start_soon(stream)
            await run(client, sid, script="echo go > gate")
        assert joined(found, "stdout") == "é\n"


async def test_env_cwd_and_stdin_in_both_forms(tmp_path: Path) -> None:
    """env is added, cwd is relative to the work dir, stdin is fed then closed."""
    async with session(tmp_path) as (_, client, sid):
        await run(client, sid, command=["mkdir", "-p", "sub/dir"])
        body = {
            "script": 'echo "$GREETING"; pwd; cat; echo read-all',
            "env": {"GREETING": "hi there"},
            "cwd": "sub/dir",
            "stdin": "line one\nline two\n",
        }
        expected = "hi there\n/home/sandbox/sub/dir\nline one\nline two\nread-all\n"
        buffered = await run(client, sid, **body)
        assert buffered["stdout"] == expected
        assert buffered["exit_code"] == 0
        streamed = await frames(client, sid, **body)
        assert joined(streamed, "stdout") == expected
        assert streamed[-1]["exit_code"] == 0


async def test_a_missing_cwd_is_the_command_s_failure(tmp_path: Path) -> None:
    """A cwd that does not exist fails that exec (127, saying so); the session goes on."""
    async with session(tmp_path) as (_, client, sid):
        missing = await run(client, sid, command=["pwd"], cwd="nope")
        assert missing["exit_code"] == 127
        assert "working directory /home/sandbox/nope" in missing["stderr"]
        assert (await run(client, sid, command=["true"]))["exit_code"] == 0


async def test_a_cwd_leading_out_through_a_link_is_refused(tmp_path: Path) -> None:
    """Unisolated, a link out of the directory is caught: 400 in both forms, no stream."""
    async with session(tmp_path, 'isolation = "none"\n') as (_, client, sid):
        await run(client, sid, command=["ln", "-s", "/", "out"])
        for headers in ({}, NDJSON):
            answer = await client.post(
                f"/v1/sessions/{sid}/exec", json={"command": ["ls"], "cwd": "out"}, headers=headers
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "unsafe_path"


async def test_large_stdin_echoed_back_does_not_deadlock(tmp_path: Path) -> None:
    """Input larger than a pipe, copied to stdout, goes through while both are pumped."""
    async with session(tmp_path) as (_, client, sid):
        data = "x" * 300_000 + "\n"
        result = await run(client, sid, command=["cat"], stdin=data)
        assert result["stdout"] == data


async def test_bad_options_are_refused(tmp_path: Path) -> None:
    """A cwd out of the work dir, a bad env name or a NUL is a 422 naming the field."""
    async with session(tmp_path) as (_, client, sid):
        for bad, field in [
            ({"cwd": "/etc"}, "cwd"),
            ({"cwd": "a/../../x"}, "cwd"),
            ({"env": {"1BAD": "x"}}, "env.1BAD.[key]"),
            ({"env": {"OK": "a\x00b"}}, "env.OK"),
        ]:
            answer = await client.post(
                f"/v1/sessions/{sid}/exec", json={"command": ["true"], **bad}, headers=NDJSON
            )
            assert answer.status_code == 422, (bad, answer.text)
            assert answer.json()["error"]["problems"][0]["path"] == field


async def test_an_unknown_session_is_a_404_not_a_stream(tmp_path: Path) -> None:
    """Errors before the command starts keep their status in the streamed form."""
    async with session(tmp_path) as (_, client, _):
        answer = await client.post(
            "/v1/sessions/nope/exec", json={"command": ["true"]}, headers=NDJSON
        )
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"


async def test_output_past_the_cap_is_not_sent(tmp_path: Path) -> None:
    """Past output_limit no more frames come; the command runs on; the end says truncated."""
    async with session(tmp_path, "output_limit = 1024\n") as (_, client, sid):
        script = "head -c 5000 /dev/zero | tr '\\0' a; echo after > marker"
        found = await frames(client, sid, script=script)
        assert joined(found, "stdout") == "a" * 1024
        assert found[-1]["truncated"] is True
        assert found[-1]["exit_code"] == 0
        assert (await run(client, sid, command=["cat", "marker"]))["stdout"] == "after\n"
        buffered = await run(client, sid, script=script)
        assert buffered["stdout"] == "a" * 1024
        assert buffered["truncated"] is True


async def test_a_timeout_ends_the_stream_with_timed_out(tmp_path: Path) -> None:
    """A command past its timeout is killed; the last frame says so, without an exit code."""
    async with session(tmp_path) as (_, client, sid):
        found = await frames(client, sid, script="echo before; exec sleep 600", timeout=0.5)
        assert joined(found, "stdout") == "before\n"
        assert found[-1]["timed_out"] is True
        assert found[-1]["exit_code"] is None


async def test_a_session_released_mid_stream_ends_it_with_an_error(tmp_path: Path) -> None:
    """The exec is the session's work: releasing the session stops it, and says why."""
    async with session(tmp_path) as (daemon, client, sid):
        async with (
            unix(daemon) as streaming,
            streaming.stream(
                "POST",
                f"/v1/sessions/{sid}/exec",
                json={"script": "echo started; exec sleep 600"},
                headers=NDJSON,
            ) as response,
        ):
            lines = response.aiter_lines()
            with trio.fail_after(15):
                assert json.loads(await anext(lines))["data"] == "started\n"
            assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 204
            with trio.fail_after(15):
                rest = [json.loads(line) async for line in lines if line]
        assert rest[-1]["error"]["code"] == "expired"


async def test_a_client_that_goes_away_kills_the_command(tmp_path: Path) -> None:
    """Dropping the stream's connection cancels the exec and kills its process group."""
    async with session(tmp_path) as (daemon, client, sid):
        script = "sleep 600 & echo $! > child; echo started; wait"
        body = json.dumps({"script": script}).encode()
        head = (
            f"POST /v1/sessions/{sid}/exec HTTP/1.1\r\nhost: daemon\r\n"
            f"accept: application/x-ndjson\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        assert daemon.api is not None
        # A raw connection, so that dropping it is exactly what the test does.
        stream = await trio.open_unix_socket(str(daemon.api.socket_path))
        async with stream:
            await stream.send_all(head + body)
            seen = b""
            with trio.fail_after(15):
                while b"started" not in seen:
                    seen += await stream.receive_some(4096)
        # The connection is closed: the background sleep (in the command's group) dies.
        gone = await run(
            client,
            sid,
            script='while kill -0 "$(cat child)" 2>/dev/null; do sleep 0.05; done',
            timeout=20,
        )
        assert gone["timed_out"] is False
        assert gone["exit_code"] == 0


def cli_env(daemon: Daemon) -> dict[str, str]:
    assert daemon.api is not None
    return {**os.environ, "SUPERVISOR_SOCKET": str(daemon.api.socket_path)}


async def test_the_cli_prints_output_as_it_comes(tmp_path: Path) -> None:
    """`session exec` writes the first line while the command still runs, then exits
    with the command's code."""
    async with session(tmp_path) as (daemon, client, sid):
        await run(client, sid, command=["mkfifo", "gate"])
        argv = [sys.executable, "-m", "supervisor", "session", "exec", sid, "--"]
        script = "echo first; read line < gate; echo second; echo err >&2; exit 9"
        process = await trio.lowlevel.open_process(
            [*argv, "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(daemon),
        )
        try:
            assert process.stdout is not None
            assert process.stderr is not None
            with trio.fail_after(30):
                assert await process.stdout.receive_some(100) == b"first\n"
            await run(client, sid, script="echo go > gate")
            with trio.fail_after(30):
                code = await process.wait()
                rest = b""
                while chunk := await process.stdout.receive_some(100):
                    rest += chunk
                err = b""
                while chunk := await process.stderr.receive_some(100):
                    err += chunk
        finally:
            process.kill()
            await process.wait()
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()
        assert (code, rest, err) == (9, b"second\n", b"err\n")


async def test_the_cli_passes_env_cwd_and_stdin(tmp_path: Path) -> None:
    """--env, --cwd and --stdin - reach the command."""
    async with session(tmp_path) as (daemon, client, sid):
        await run(client, sid, command=["mkdir", "sub"])
        argv = [sys.executable, "-m", "supervisor", "session", "exec", sid, "--env", "A=b c"]
        argv += ["--cwd", "sub", "--stdin", "-", "--", "sh", "-c", 'echo "$A"; pwd; cat']

        def ran() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                argv, input="piped\n", capture_output=True, text=True, timeout=30,
                env=cli_env(daemon), check=False,
            )  # fmt: skip

        done = await trio.to_thread.run_sync(ran)
        assert (done.returncode, done.stdout) == (0, "b c\n/home/sandbox/sub\npiped\n")


async def test_the_cli_exits_125_for_its_own_failures(tmp_path: Path) -> None:
    """An unknown session, a refused option or no daemon is 125, not a command's code."""
    async with session(tmp_path) as (daemon, _, sid):
        env = cli_env(daemon)
        unknown = await trio.to_thread.run_sync(
            lambda: run_cli("session", "exec", "nope", "--", "true", env=env)
        )
        assert unknown.returncode == 125
        assert "no session" in unknown.stderr
        refused = await trio.to_thread.run_sync(
            lambda: run_cli("session", "exec", sid, "--cwd", "/etc", "--", "true", env=env)
        )
        assert refused.returncode == 125
        assert "cwd" in refused.stderr
    nobody = {**os.environ, "SUPERVISOR_SOCKET": str(tmp_path / "none.sock")}
    unreachable = await trio.to_thread.run_sync(
        lambda: run_cli("session", "exec", "x", "--", "true", env=nobody)
    )
    assert unreachable.returncode == 125
    assert "cannot reach the daemon" in unreachable.stderr
