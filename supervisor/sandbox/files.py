"""File transfers in and out of a sandbox: which paths and tar members are allowed.

Pure rules, shared by the backends. A client path is relative to the sandbox's work
directory: absolute paths, `..` components and NUL are refused here, before any backend touches a file system. Whether a path goes through a symlink
the sandbox planted is the backend's to refuse while it walks (`backends.hostfs` opens
every component with `O_NOFOLLOW`), since only it sees the file system.

An uploaded tar is checked member by member before anything is written: regular files,
directories and symlinks whose target stays inside the tree are allowed; absolute or
climbing names, hard links, devices and fifos are refused, and so is the whole archive.
"""

from __future__ import annotations

import posixpath
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Literal

from supervisor.errors import SandboxFileError, TransferTooLargeError, UnsafePathError

if TYPE_CHECKING:
    import tarfile

MAX_PATH = 4096
EntryType = Literal["file", "dir", "symlink", "other"]


def clean_path(raw: str) -> PurePosixPath:
    """`raw` as a normalised path relative to the work directory ("." for the directory).

    Raises:
        UnsafePathError: absolute, `..`, NUL, or too long.
    """
    if "\x00" in raw:
        raise UnsafePathError("the path contains a NUL character")
    if len(raw) > MAX_PATH:
        raise UnsafePathError(f"the path is longer than {MAX_PATH} characters")
    if raw.startswith("/"):
        raise UnsafePathError(f"{raw[:200]!r} is absolute: give a path relative to the workdir")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(f"{raw[:200]!r} climbs out with '..'")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def entry_type(mode: int) -> EntryType:
    """The listing's name for a file's type, from its `st_mode`."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a listed directory (not followed if it is a symlink)."""

    name: str
    type: EntryType
    size: int
    mode: int  # the permission bits
    mtime: float

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
        }


@dataclass(frozen=True, slots=True)
class Listing:
    """A directory's entries, sorted by name."""

    path: str
    entries: tuple[Entry, ...]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "entries": [entry.to_json() for entry in self.entries]}


@dataclass(frozen=True, slots=True)
class Download:
    """What a download produced: a file's bytes or a directory's tar, in `data` (rewound)."""

    is_dir: bool
    size: int
    data: IO[bytes]


def member_path(member: tarfile.TarInfo) -> PurePosixPath:
    """A tar member's name, checked like a client path.

    Raises:
        UnsafePathError: absolute, `..`, a hard link, a device or fifo, or a symlink whose
            target leaves the tree.
    """
    try:
        path = clean_path(member.name)
    except UnsafePathError as exc:
        raise UnsafePathError(f"tar member {member.name[:200]!r}: {exc}") from None
    if member.isreg() or member.isdir():
        return path
    if member.issym():
        target = member.linkname
        inside = posixpath.normpath(posixpath.join(str(path.parent), target))
        if target.startswith("/") or "\x00" in target or inside.split("/")[0] == "..":
            raise UnsafePathError(
                f"tar member {member.name[:200]!r} links to {target[:200]!r}, outside the tree"
            )
        return path
    kind = "a hard link" if member.islnk() else "a device or fifo"
    raise UnsafePathError(f"tar member {member.name[:200]!r} is {kind}; only files, "
                          "directories and symlinks inside the tree are accepted")  # fmt: skip


def checked_members(
    archive: tarfile.TarFile, limit: int
) -> list[tuple[PurePosixPath, tarfile.TarInfo]]:
    """Every member of `archive` with its checked path: all are checked before any is
    written, so a bad archive writes nothing.

    Raises:
        UnsafePathError: a member that could leave the tree (see `member_path`).
        TransferTooLargeError: the files add up to more than `limit` bytes.
        SandboxFileError: the archive is damaged.
    """
    import tarfile  # loaded by the first transfer, not by every daemon

    checked, total = [], 0
    try:
        members = archive.getmembers()
    except tarfile.TarError as exc:
        raise SandboxFileError(f"the tar archive is damaged: {exc}") from None
    for member in members:
        path = member_path(member)
        total += member.size if member.isreg() else 0
        if total > limit:
            raise TransferTooLargeError(f"the tar's files add up to more than {limit} bytes")
        checked.append((path, member))
    return checked


def open_tar(data: IO[bytes]) -> tarfile.TarFile:
    """`data` (seekable, uncompressed) as a tar.

    Raises:
        SandboxFileError: it is not a tar at all.
    """
    import tarfile

    try:
        return tarfile.open(fileobj=data, mode="r:")
    except tarfile.TarError as exc:
        raise SandboxFileError(f"the body is not a tar archive: {exc}") from None
