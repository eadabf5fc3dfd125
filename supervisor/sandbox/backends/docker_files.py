"""File transfers in and out of a docker sandbox, through execs of `tar`, `cat` and `find`.

Not the engine's archive API (`put_archive`/`get_archive`): it reads and writes the
container's own layer, beside the tmpfs mounted on the workdir, and refuses a read-only
container outright; a sandbox's workdir is both. Paths are checked (`files.clean_path`)
and uploaded tars member by member (`files.checked_members`) here, before the engine is
called; inside, the container is the boundary, so a symlink there leads only to the
container's own files. A download is sized first and refused over the limit before its
bytes are read.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from pathlib import PurePosixPath
from typing import IO

import trio

from supervisor.errors import SandboxFileError, SandboxPathNotFoundError, TransferTooLargeError
from supervisor.launchers.docker import DockerEngine
from supervisor.sandbox.files import (
    Download,
    Entry,
    Listing,
    checked_members,
    clean_path,
    open_tar,
)

TIMEOUT = 120.0
TAR_SLACK = 1 << 20  # tar headers and padding on top of the files themselves
EXTRACT = 'mkdir -p -- "$1" && exec tar -x --no-same-owner -C "$1"'
PROBE = (
    'if [ -d "$1" ]; then printf "dir %s" "$(du -sb -- "$1" | cut -f1)"; '
    'elif [ -f "$1" ]; then printf "file %s" "$(stat -L -c %s -- "$1")"; '
    'elif [ -e "$1" ]; then printf "other 0"; else printf "missing 0"; fi'
)
LIST = (
    'if [ ! -d "$1" ]; then [ -e "$1" ] && exit 3; exit 4; fi; '
    "exec find \"$1\" -mindepth 1 -maxdepth 1 -printf '%f\\0%y\\0%s\\0%m\\0%T@\\0'"
)
_TYPES = {"f": "file", "d": "dir", "l": "symlink"}


class DockerFiles:
    """The files of one container's workdir."""

    def __init__(
        self, engine: DockerEngine, container_id: str, workdir: str, output_limit: int
    ) -> None:
        self._engine = engine
        self._id = container_id
        self._workdir = workdir
        self._output_limit = output_limit

    def _target(self, path: PurePosixPath) -> str:
        return posixpath.normpath(posixpath.join(self._workdir, str(path)))

    async def _run(
        self, argv: list[str], *, data: bytes | None = None, limit: int = 0
    ) -> tuple[int | None, bytes, str, bool]:
        output_limit = max(limit, self._output_limit)
        if data is None:
            raw = await self._engine.exec(
                self._id, argv, timeout=TIMEOUT, output_limit=output_limit, workdir=self._workdir
            )
        else:
            raw = await self._engine.exec_input(
                self._id, argv, data, timeout=TIMEOUT, output_limit=output_limit
            )
        detail = raw.stderr.decode(errors="replace").strip()[-500:]
        return raw.exit_code, raw.stdout, detail, raw.truncated

    async def upload(self, dest: str, data: IO[bytes], *, tar: bool, limit: int) -> None:
        path = clean_path(dest)
        if not tar and path == PurePosixPath("."):
            raise SandboxFileError("give the file a path (the workdir itself is a directory)")
        directory = self._target(path if tar else path.parent)
        # The spool may be on disk: read (and check) it off the event loop.
        payload = await trio.to_thread.run_sync(_payload, path, data, tar, limit)
        code, _, detail, _ = await self._run(["sh", "-c", EXTRACT, "sh", directory], data=payload)
        if code != 0:
            raise SandboxFileError(f"writing {dest} in the container failed: {detail}")

    async def download(self, path: str, limit: int) -> Download:
        clean = clean_path(path)
        target = self._target(clean)
        _, out, _, _ = await self._run(["sh", "-c", PROBE, "sh", target])
        kind, _, size = out.decode(errors="replace").partition(" ")
        if kind == "missing":
            raise SandboxPathNotFoundError(f"{clean} does not exist in the sandbox")
        if kind not in ("file", "dir"):
            raise SandboxFileError(f"{clean} is not a regular file or a directory")
        if int(size or 0) > limit:
            raise TransferTooLargeError(f"{clean} is {size} bytes, over the file_limit ({limit})")
        is_dir = kind == "dir"
        argv = ["tar", "-c", "-C", target, "."] if is_dir else ["cat", "--", target]
        cap = limit + (TAR_SLACK if is_dir else 0)
        code, out, detail, truncated = await self._run(argv, limit=cap)
        if truncated or len(out) > cap:
            raise TransferTooLargeError(f"{clean} is over the file_limit ({limit})")
        if code != 0:
            raise SandboxFileError(f"reading {clean} in the container failed: {detail}")
        return Download(is_dir, len(out), io.BytesIO(out))

    async def listdir(self, path: str) -> Listing:
        clean = clean_path(path)
        code, out, detail, truncated = await self._run(
            ["sh", "-c", LIST, "sh", self._target(clean)]
        )
        if code == 4:
            raise SandboxPathNotFoundError(f"{clean} does not exist in the sandbox")
        if code == 3:
            raise SandboxFileError(f"{clean} is not a directory")
        if code != 0 or truncated:
            raise SandboxFileError(
                f"listing {clean} in the container failed: {detail or 'too long'}"
            )
        fields = out.split(b"\0")[:-1]
        entries = []
        for i in range(0, len(fields) - 4, 5):
            name, kind, size, mode, mtime = (f.decode(errors="replace") for f in fields[i : i + 5])
            entries.append(
                Entry(name, _TYPES.get(kind, "other"), int(size), int(mode, 8), float(mtime))  # type: ignore[arg-type]
            )
        return Listing(str(clean), tuple(sorted(entries, key=lambda e: e.name)))


def _payload(path: PurePosixPath, data: IO[bytes], tar: bool, limit: int) -> bytes:
    """The tar to extract: the client's, once every member passed, or one of its file."""
    if tar:
        checked_members(open_tar(data), limit)  # refused before the engine sees it
        data.seek(0)
        return data.read()
    return _single(path.name, data.read())


def _single(name: str, content: bytes) -> bytes:
    """A tar of one file, `name`, holding `content`."""
    buffer = io.BytesIO()
    member = tarfile.TarInfo(name)
    member.size, member.mode = len(content), 0o644
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(member, io.BytesIO(content))
    return buffer.getvalue()
