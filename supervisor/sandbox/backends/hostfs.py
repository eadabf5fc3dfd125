"""Files in a process sandbox's work directory, reached from the host without ever
following a symlink the sandbox planted.

Every path is walked one component at a time from a descriptor of the work directory,
each opened with `O_NOFOLLOW`: a symlink anywhere on the way, even one swapped in while
we walk, fails the open instead of leading out (to /etc, or to another sandbox). Files
are created relative to their directory's descriptor, owned by the sandbox's uid, and
never setuid; a file with other hard links is not written. Blocking: run in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from supervisor.errors import (
    SandboxFileError,
    SandboxPathNotFoundError,
    TransferTooLargeError,
    UnsafePathError,
)
from supervisor.sandbox.files import (
    Download,
    Entry,
    Listing,
    checked_members,
    entry_type,
    open_tar,
)

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CHUNK = 1 << 20
SPOOL_MEMORY = 1 << 20  # a download past this goes to a temporary file


def _refusal(exc: OSError, shown: str, fd: int, name: str) -> Exception:
    """Why walking to `name` (in the directory `fd`) failed, as the API tells it."""
    if exc.errno == errno.ENOENT:
        return SandboxPathNotFoundError(f"{shown} does not exist in the sandbox")
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            return UnsafePathError(f"{shown} goes through a symlink, which is not followed")
    if exc.errno in (errno.ENOTDIR, errno.ELOOP):
        return SandboxFileError(f"{shown}: a part of it is not a directory")
    if exc.errno == errno.EISDIR:
        return SandboxFileError(f"{shown} is a directory")
    return SandboxFileError(f"{shown}: {os.strerror(exc.errno or 0)}")


@contextlib.contextmanager
def _directory(
    top: int, parts: Sequence[str], *, create: bool = False, owner: int | None = None
) -> Iterator[int]:
    """A descriptor of the directory `parts` under `top`, made (owned by `owner`) if
    `create`."""
    fd = os.dup(top)
    try:
        for i, part in enumerate(parts):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                    if owner is not None:
                        os.chown(part, owner, owner, dir_fd=fd, follow_symlinks=False)
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _refusal(exc, "/".join(parts[: i + 1]), fd, part) from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _root(workdir: Path) -> Iterator[int]:
    fd = os.open(workdir, DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def _write(
    parent: int, name: str, shown: str, data: IO[bytes], *, mode: int, owner: int | None
) -> int:
    """Write `data` as `name` in `parent` (replacing a regular file); returns its size."""
    try:
        fd = os.open(name, WRITE_FLAGS, mode, dir_fd=parent)
    except OSError as exc:
        raise _refusal(exc, shown, parent, name) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(f"{shown} exists and is not a regular file")
        if info.st_nlink > 1:
            raise UnsafePathError(f"{shown} has other hard links; it is not overwritten")
        os.ftruncate(fd, 0)
        if owner is not None:
            os.fchown(fd, owner, owner)
        os.fchmod(fd, mode & 0o777)
        size = 0
        while chunk := data.read(CHUNK):
            view = memoryview(chunk)
            while view:  # a short write (a full disk) leaves the rest: write it or fail
                view = view[os.write(fd, view) :]
            size += len(chunk)
        return size
    finally:
        os.close(fd)


def write_file(workdir: Path, path: PurePosixPath, data: IO[bytes], owner: int | None) -> int:
    """Write `data` as the file `path` (its directories made); returns its size."""
    if path == PurePosixPath("."):
        raise SandboxFileError("give the file a path (the workdir itself is a directory)")
    with (
        _root(workdir) as root,
        _directory(root, path.parent.parts, create=True, owner=owner) as parent,
    ):
        return _write(parent, path.name, str(path), data, mode=0o644, owner=owner)


def extract_tar(
    workdir: Path, dest: PurePosixPath, data: IO[bytes], owner: int | None, limit: int
) -> int:
    """Extract the tar `data` under the directory `dest`; returns how many members.

    Every member is checked first (`files.checked_members`): a bad one writes nothing.
    """
    archive = open_tar(data)
    members = checked_members(archive, limit)
    with _root(workdir) as root, _directory(root, dest.parts, create=True, owner=owner) as top:
        for path, member in members:
            if path == PurePosixPath("."):
                continue
            shown = str(dest / path)
            with _directory(top, path.parent.parts, create=True, owner=owner) as parent:
                if member.isdir():
                    with _directory(parent, [path.name], create=True, owner=owner):
                        pass
                elif member.issym():
                    with contextlib.suppress(FileNotFoundError):
                        if stat.S_ISDIR(
                            os.stat(path.name, dir_fd=parent, follow_symlinks=False).st_mode
                        ):
                            raise SandboxFileError(
                                f"{shown} is a directory; not replaced by a link"
                            )
                        os.unlink(path.name, dir_fd=parent)
                    os.symlink(member.linkname, path.name, dir_fd=parent)
                    if owner is not None:
                        os.chown(path.name, owner, owner, dir_fd=parent, follow_symlinks=False)
                else:
                    source = archive.extractfile(member)
                    assert source is not None  # a regular member
                    _write(
                        parent,
                        path.name,
                        shown,
                        source,
                        mode=member.mode & 0o777 or 0o644,
                        owner=owner,
                    )
    return len(members)


def read(workdir: Path, path: PurePosixPath, limit: int) -> Download:
    """The file `path`'s bytes, or a tar of the directory `path` (symlinks kept as links,
    fifos and devices left out).

    Raises:
        TransferTooLargeError: more than `limit` bytes.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 - returned
    try:
        with _root(workdir) as root, _directory(root, path.parent.parts) as parent:
            name = path.name or "."
            try:
                info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except OSError as exc:
                raise _refusal(exc, str(path), parent, name) from None
            if stat.S_ISDIR(info.st_mode):
                with (
                    _directory(parent, [name]) as top,
                    tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as out,
                ):
                    _add_tree(out, top, PurePosixPath(), spool, limit)
                is_dir = True
            elif stat.S_ISLNK(info.st_mode):
                raise UnsafePathError(f"{path} is a symlink, which is not followed")
            else:
                _copy_file(parent, name, str(path), spool, limit)
                is_dir = False
        size = spool.tell()
        spool.seek(0)
        return Download(is_dir, size, spool)
    except BaseException:
        spool.close()
        raise


def _copy_file(parent: int, name: str, shown: str, out: IO[bytes], limit: int) -> None:
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise _refusal(exc, shown, parent, name) from None
    with open(fd, "rb", closefd=True) as source:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SandboxFileError(f"{shown} is not a regular file or a directory")
        if info.st_size > limit:
            raise TransferTooLargeError(
                f"{shown} is {info.st_size} bytes, over the file_limit ({limit})"
            )
        while chunk := source.read(CHUNK):
            out.write(chunk)
            if out.tell() > limit:
                raise TransferTooLargeError(f"{shown} grew over the file_limit ({limit})")


def _add_tree(
    out: tarfile.TarFile, fd: int, prefix: PurePosixPath, spool: IO[bytes], limit: int
) -> None:
    """Add what the directory `fd` holds to `out`, under `prefix`, depth first."""
    with os.scandir(fd) as found:
        entries = sorted(found, key=lambda e: e.name)
    for entry in entries:
        info = entry.stat(follow_symlinks=False)
        member = tarfile.TarInfo(str(prefix / entry.name))
        member.mode, member.mtime = stat.S_IMODE(info.st_mode), int(info.st_mtime)
        if stat.S_ISDIR(info.st_mode):
            member.type = tarfile.DIRTYPE
            out.addfile(member)
            with _directory(fd, [entry.name]) as child:
                _add_tree(out, child, prefix / entry.name, spool, limit)
        elif stat.S_ISLNK(info.st_mode):
            member.type, member.linkname = tarfile.SYMTYPE, os.readlink(entry.name, dir_fd=fd)
            out.addfile(member)
        elif stat.S_ISREG(info.st_mode):
            try:
                file_fd = os.open(entry.name, READ_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _refusal(exc, member.name, fd, entry.name) from None
            with open(file_fd, "rb", closefd=True) as source:
                member.size = os.fstat(file_fd).st_size
                if spool.tell() + member.size > limit:
                    raise TransferTooLargeError(f"the directory is over the file_limit ({limit})")
                out.addfile(member, source)
        if spool.tell() > limit:
            raise TransferTooLargeError(f"the directory is over the file_limit ({limit})")


def listdir(workdir: Path, path: PurePosixPath) -> Listing:
    """The entries of the directory `path`, symlinks not followed."""
    with _root(workdir) as root, _directory(root, path.parts) as fd, os.scandir(fd) as found:
        entries = []
        for item in found:
            info = item.stat(follow_symlinks=False)
            entries.append(
                Entry(item.name, entry_type(info.st_mode), info.st_size,
                      stat.S_IMODE(info.st_mode), info.st_mtime)
            )  # fmt: skip
    return Listing(str(path), tuple(sorted(entries, key=lambda e: e.name)))
