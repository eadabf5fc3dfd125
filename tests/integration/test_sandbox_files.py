"""Files in and out of sandboxes over the API: real daemon, real bubblewrap sandboxes,
real Docker, and every way out of the work dir tried and refused."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import trio

from supervisor.api.client import Client
from supervisor.errors import RequestError
from tests.integration.conftest import run_cli
from tests.integration.test_api import unix
from tests.integration.test_sandbox_api import acquire, daemon_with, until_ready

LIMIT = 64 * 1024
ENV = """
[environments.box]
backend = "process"
min_ready = 2
max_size = 2
acquire_timeout = "10s"
file_limit = "64k"
[[environments.box.features]]
kind = "command"
setup_session = ["sh", "-c", "find . -mindepth 1 -delete"]
"""
RAW = {"content-type": "application/octet-stream"}
TAR = {"content-type": "application/x-tar"}


def files(sid: str) -> str:
    return f"/v1/sessions/{sid}/files"


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, content in members:
            if content is not None:
                info.size = len(content)
            archive.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o640
    return info


def contents(data: bytes) -> dict[str, bytes | str]:
    """A tar's members: a file's bytes, "dir", or "-> target" for a symlink."""
    found: dict[str, bytes | str] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for info in archive:
            name = info.name.removeprefix("./")
            if info.isdir():
                found[name] = "dir"
            elif info.issym():
                found[name] = f"-> {info.linkname}"
            else:
                extracted = archive.extractfile(info)
                assert extracted is not None
                found[name] = extracted.read()
    found.pop("", None)
    found.pop(".", None)
    return found


async def sh(client: httpx.AsyncClient, sid: str, script: str) -> dict[str, Any]:
    answer = await client.post(f"/v1/sessions/{sid}/exec", json={"command": ["sh", "-c", script]})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def test_a_file_round_trips_owned_by_the_sandbox(tmp_path: Path) -> None:
    """A PUT file lands in the work dir (directories made), owned by the sandbox's uid,
    usable inside; GET returns its bytes."""
    async with daemon_with(tmp_path, ENV) as daemon, unix(daemon) as client:
        session = (await acquire(client)).json()
        sid, connection = session["session_id"], session["connection"]
        body = bytes(range(256)) * 10
        put = await client.put(
            files(sid), params={"path": "in/data.bin"}, content=body, headers=RAW
        )
        assert put.status_code == 204, put.text
        host = Path(connection["workdir"]) / "in" / "data.bin"
        assert host.read_bytes() == body
        assert host.stat().st_uid == host.parent.stat().st_uid == connection["uid"]
        inside = await sh(client, sid, "wc -c < in/data.bin && echo more >> in/data.bin && echo ok")
        assert inside["stdout"] == "2560\nok\n"
        got = await client.get(files(sid), params={"path": "in/data.bin"})
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.content == body + b"more\n"


async def test_a_directory_round_trips_as_a_tar_and_lists(tmp_path: Path) -> None:
    """A tar is extracted under the path (files, dirs, an inside symlink); the directory
    lists with types, modes and sizes, and comes back as the same tar."""
    archive = tar_of(
        (member("src", tarfile.DIRTYPE), None),
        (member("src/main.py"), b"print('hi')\n"),
        (member("README"), b"read me\n"),
        (member("src/link", tarfile.SYMTYPE, "../README"), None),
    )
    async with daemon_with(tmp_path, ENV) as daemon, unix(daemon) as client:
        session = (await acquire(client)).json()
        sid = session["session_id"]
        put = await client.put(files(sid), params={"path": "proj"}, content=archive, headers=TAR)
        assert put.status_code == 204, put.text
        ran = await sh(client, sid, "cat proj/src/link && python3 proj/src/main.py")
        assert ran["stdout"] == "read me\nhi\n"
        listed = await client.get(files(sid), params={"path": "proj", "list": "1"})
        assert listed.status_code == 200, listed.text
        entries = {e["name"]: e for e in listed.json()["entries"]}
        assert listed.json()["path"] == "proj"
        assert sorted(entries) == ["README", "src"]
        assert entries["README"]["type"] == "file"
        assert entries["README"]["size"] == 8
        assert entries["README"]["mode"] == 0o640
        assert entries["src"]["type"] == "dir"
        assert entries["README"]["mtime"] > 0
        inner = await client.get(files(sid), params={"path": "proj/src", "list": "true"})
        assert {e["name"]: e["type"] for e in inner.json()["entries"]} == {
            "link": "symlink",
            "main.py": "file",
        }
        got = await client.get(files(sid), params={"path": "proj"})
        assert got.headers["content-type"] == "application/x-tar"
        assert contents(got.content) == {
            "README": b"read me\n",
            "src": "dir",
            "src/main.py": b"print('hi')\n",
            "src/link": "-> ../README",
        }
        root = await client.get(files(sid), params={"list": "1"})
        assert [e["name"] for e in root.json()["entries"]] == ["proj"]


async def test_paths_out_of_the_work_dir_are_refused(tmp_path: Path) -> None:
    """`..`, absolute paths and NUL are 400 before anything is touched."""
    async with daemon_with(tmp_path, ENV) as daemon, unix(daemon) as client:
        sid = (await acquire(client)).json()["session_id"]
        for path in ("../escape", "a/../../escape", "/tmp/escape", "/etc/passwd", "a\x00b"):
            put = await client.put(files(sid), params={"path": path}, content=b"x", headers=RAW)
            assert (put.status_code, put.json()["error"]["code"]) == (400, "unsafe_path"), path
            got = await client.get(files(sid), params={"path": path})
            assert got.status_code == 400, path
        assert not (tmp_path / "escape").exists()
        assert not Path("/tmp/escape").exists()


async def test_symlinks_planted_in_the_sandbox_are_never_followed(tmp_path: Path) -> None:
    """A link to /etc, to a host file, or to another sandbox's work dir: PUT, GET and list
    through it are refused, and nothing outside changes."""
    async with daemon_with(tmp_path, ENV) as daemon, unix(daemon) as client:
        a = (await acquire(client)).json()
        b = (await acquire(client)).json()
        a_dir = Path(a["connection"]["workdir"])
        (a_dir / "secret").write_text("a's")
        planted = await sh(
            client,
            b["session_id"],
            f"ln -s /etc etc && ln -s /etc/hostname hostname && ln -s {a_dir} other && echo ok",
        )
        assert planted["stdout"] == "ok\n", planted
        hostname = Path("/etc/hostname").read_bytes()
        sid = b["session_id"]
        for path in ("etc/evil", "hostname", "other/secret", "other/new"):
            put = await client.put(files(sid), params={"path": path}, content=b"x", headers=RAW)
            assert (put.status_code, put.json()["error"]["code"]) == (400, "unsafe_path"), path
        for path in ("etc/passwd", "etc", "hostname", "other", "other/secret"):
            got = await client.get(files(sid), params={"path": path})
            assert got.status_code == 400, (path, got.text)
            listed = await client.get(files(sid), params={"path": path, "list": "1"})
            assert listed.status_code == 400, (path, listed.text)
        through_tar = tar_of((member("evil"), b"x"))
        put = await client.put(
            files(sid), params={"path": "other"}, content=through_tar, headers=TAR
        )
        assert put.status_code == 400
        assert not Path("/etc/evil").exists()
        assert Path("/etc/hostname").read_bytes() == hostname
        assert sorted(p.name for p in a_dir.iterdir()) == ["secret"]
        assert (a_dir / "secret").read_text() == "a's"
        whole = await client.get(files(sid), params={"path": "."})  # links kept as links
        assert contents(whole.content) == {
            "etc": "-> /etc",
            "hostname": "-> /etc/hostname",
            "other": f"-> {a_dir}",
        }


async def test_a_link_swapped_in_mid_transfer_never_leads_out(tmp_path: Path) -> None:
    """The sandbox flips `d` between a directory and a link to a host directory as fast
    as it can while files are put and got through it: nothing lands outside, nothing
    from outside comes back."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    flip = (
        "i=0; while [ $i -lt 200000 ]; do rm -rf d; mkdir -p d; echo mine > d/secret; "
        f"rm -rf d; ln -s {outside} d; i=$((i+1)); done"
    )
    async with daemon_with(tmp_path, ENV) as daemon, unix(daemon) as client:
        sid = (await acquire(client)).json()["session_id"]
        # setsid: out of the exec's process group, which is killed when its leader exits;
        # the exec returns once the flipper has left the group (it marks that it runs).
        started = await sh(
            client,
            sid,
            f"setsid sh -c 'touch .runs; {flip}' >/dev/null 2>&1 & "
            "while [ ! -e .runs ]; do :; done; echo started",
        )
        assert started["stdout"] == "started\n"
        seen: set[int] = set()
        i = 0
        while i < 100 or not {204, 400} <= seen:  # both states met: the race was on
            i += 1
            assert i < 5000, seen
            put = await client.put(
                files(sid), params={"path": f"d/new{i}"}, content=b"x", headers=RAW
            )
            got = await client.get(files(sid), params={"path": "d/secret"})
            seen |= {put.status_code, got.status_code}
            assert got.content != b"host secret"
        assert seen <= {204, 200, 400, 404}, seen
        assert sorted(p.name for p in outside.iterdir()) == ["secret"]
        assert (outside / "secret").read_text() == "host secret"


async def test_dangerous_tar_members_refuse_the_whole_archive(tmp_path: Path) -> None:
    """`../x`, absolute names, devices, fifos, hard links and links out of the tree:
    400, and not even the good members before them are written."""
    device = member("null", tarfile.CHRTYPE)
    device.devmajor, device.devminor = 1, 3
    bad = {
        "climbs": member("../x"),
        "deep climb": member("a/../../x"),
        "absolute": member("/tmp/abs-member"),
        "device": device,
        "fifo": member("pipe", tarfile.FIFOTYPE),
        "hard link": member("hard", tarfile.LNKTYPE, "/etc/passwd"),
        "link out": member("etc", tarfile.SYMTYPE, "/etc"),
        "relative link out": member("up", tarfile.SYMTYPE, "../../.."),
    }
    async with daemon_with(tmp_path, ENV) as daemon, unix(daemon) as client:
        session = (await acquire(client)).json()
        sid, workdir = session["session_id"], Path(session["connection"]["workdir"])
        for why, info in bad.items():
            content = b"x" if info.isreg() else None
            archive = tar_of((member("good"), b"fine"), (info, content))
            put = await client.put(files(sid), params={"path": "t"}, content=archive, headers=TAR)
            assert (put.status_code, put.json()["error"]["code"]) == (400, "unsafe_path"), why
        assert list(workdir.iterdir()) == []
        assert not Path("/tmp/abs-member").exists()
        assert not (workdir.parent / "x").exists()
        garbage = await client.put(files(sid), params={"path": "t"}, content=b"no tar", headers=TAR)
        assert garbage.status_code == 400
        wrong = await client.put(files(sid), params={"path": "t"}, content=b"x")
        assert wrong.status_code == 415


async def test_transfers_over_the_file_limit_are_413(tmp_path: Path) -> None:
    """Declared, streamed (chunked) and tar uploads over `file_limit`, and downloads of a
    file or directory over it, are 413 `body_too_large`; the session carries on."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"z" * (LIMIT // 2)

    async with daemon_with(tmp_path, ENV) as daemon, unix(daemon) as client:
        session = (await acquire(client)).json()
        sid, workdir = session["session_id"], Path(session["connection"]["workdir"])
        big = b"y" * (LIMIT + 1)
        declared = await client.put(files(sid), params={"path": "big"}, content=big, headers=RAW)
        assert (declared.status_code, declared.json()["error"]["code"]) == (413, "body_too_large")
        async with unix(daemon) as fresh:  # the 413 closed the connection
            streamed = await fresh.put(
                files(sid), params={"path": "big"}, content=chunks(), headers=RAW
            )
        assert (streamed.status_code, streamed.json()["error"]["code"]) == (413, "body_too_large")
        assert not (workdir / "big").exists()
        made = await sh(client, sid, f"mkdir d && head -c {LIMIT + 1} /dev/zero > d/big && echo ok")
        assert made["stdout"] == "ok\n"
        async with unix(daemon) as fresh:
            for path in ("d/big", "d"):
                got = await fresh.get(files(sid), params={"path": path})
                assert (got.status_code, got.json()["error"]["code"]) == (413, "body_too_large")
            assert (await sh(fresh, sid, "echo alive"))["stdout"] == "alive\n"


async def test_files_need_a_live_session(tmp_path: Path) -> None:
    """An unknown session is 404, a released one 410."""
    async with daemon_with(tmp_path, ENV) as daemon, unix(daemon) as client:
        sid = (await acquire(client)).json()["session_id"]
        assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 204
        for target in (sid, "box-session-000000000000"):
            put = await client.put(files(target), params={"path": "a"}, content=b"x", headers=RAW)
            got = await client.get(files(target), params={"path": "a"})
            expected = 410 if target == sid else 404
            assert put.status_code == got.status_code == expected


async def test_cli_put_get_ls(tmp_path: Path) -> None:
    """`session put` and `get` copy a file and a directory (as a tar) both ways; `ls` lists."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_text("A")
    (tree / "b.txt").write_text("B")
    async with daemon_with(tmp_path, ENV) as daemon:
        assert daemon.api is not None
        env = {**os.environ, "SUPERVISOR_SOCKET": str(daemon.api.socket_path)}

        async def cli(*args: str) -> Any:
            done = await trio.to_thread.run_sync(lambda: run_cli("session", *args, env=env))
            assert done.returncode == 0, done.stderr
            return done

        sid = (await cli("acquire", "box")).stdout.strip()
        await cli("put", sid, str(tree))
        await cli("put", sid, str(tree / "b.txt"), "copies/")
        listed = (await cli("ls", sid)).stdout
        assert "copies/" in listed
        assert "tree/" in listed
        assert "b.txt" in (await cli("ls", sid, "copies")).stdout
        back = tmp_path / "back"
        await cli("get", sid, "tree", str(back))
        assert (back / "sub" / "a.txt").read_text() == "A"
        assert (back / "b.txt").read_text() == "B"
        await cli("get", sid, "copies/b.txt", str(tmp_path / "b-again"))
        assert (tmp_path / "b-again").read_text() == "B"


async def test_the_python_client_moves_files(tmp_path: Path) -> None:
    """put_files streams a file object, get_files writes to one, list_files lists; a
    refusal is a RequestError with the API's code."""
    async with daemon_with(tmp_path, ENV) as daemon, unix(daemon) as http:
        sid = (await acquire(http)).json()["session_id"]
        assert daemon.api is not None
        socket_path = daemon.api.socket_path

        def use() -> tuple[bytes, bool, list[str], str]:
            with Client.connect(socket_path=socket_path) as client:
                source = io.BytesIO(b"skip:payload")
                source.seek(5)  # from where the file object is
                client.put_files(sid, "p/one", source)
                client.put_files(sid, "q", tar_of((member("two"), b"2")), tar=True)
                out = io.BytesIO()
                is_dir = client.get_files(sid, "p/one", out)
                names = [e["name"] for e in client.list_files(sid)["entries"]]
                code = ""
                try:
                    client.get_files(sid, "../x", io.BytesIO())
                except RequestError as exc:
                    code = exc.code
                return out.getvalue(), is_dir, names, code

        data, is_dir, names, code = await trio.to_thread.run_sync(use)
        assert (data, is_dir, names, code) == (b"payload", False, ["p", "q"], "unsafe_path")


DOCKER_ENV = """
[environments.box]
backend = "docker"
min_ready = 1
max_size = 1
file_limit = "64k"
docker = { image = "supervisor-test/sandbox:bookworm", memory = "128m" }
"""


async def test_docker_files_round_trip_and_stay_confined(tmp_path: Path) -> None:
    """A docker sandbox takes a file and a tar into its tmpfs workdir, lists and returns
    them; escapes and oversize transfers are refused before the engine is asked."""
    archive = tar_of((member("d", tarfile.DIRTYPE), None), (member("d/f.txt"), b"in tar\n"))
    async with daemon_with(tmp_path, DOCKER_ENV) as daemon, unix(daemon) as client:
        await until_ready(daemon, 1, timeout=60)
        sid = (await acquire(client)).json()["session_id"]
        put = await client.put(files(sid), params={"path": "x/one"}, content=b"1\n", headers=RAW)
        assert put.status_code == 204, put.text
        put = await client.put(files(sid), params={"path": "t"}, content=archive, headers=TAR)
        assert put.status_code == 204, put.text
        ran = await sh(client, sid, "cat /work/x/one /work/t/d/f.txt; id -u")
        assert ran["stdout"] == "1\nin tar\n65534\n"
        got = await client.get(files(sid), params={"path": "x/one"})
        assert (got.status_code, got.content) == (200, b"1\n")
        tree = await client.get(files(sid), params={"path": "t"})
        assert tree.headers["content-type"] == "application/x-tar"
        assert contents(tree.content) == {"d": "dir", "d/f.txt": b"in tar\n"}
        listed = await client.get(files(sid), params={"path": "t/d", "list": "1"})
        assert [(e["name"], e["type"], e["size"]) for e in listed.json()["entries"]] == [
            ("f.txt", "file", 7)
        ]
        missing = await client.get(files(sid), params={"path": "nope"})
        assert missing.status_code == 404
        for path in ("../etc/passwd", "/etc/passwd"):
            refused = await client.get(files(sid), params={"path": path})
            assert refused.status_code == 400
        evil = tar_of((member("../../etc/evil"), b"x"))
        refused = await client.put(files(sid), params={"path": "t"}, content=evil, headers=TAR)
        assert refused.status_code == 400
        await sh(client, sid, f"head -c {LIMIT + 1} /dev/zero > big")
        too_big = await client.get(files(sid), params={"path": "big"})
        assert too_big.status_code == 413
