"""The host side of a process sandbox's files: nothing is reached through a symlink."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from supervisor.errors import (
    SandboxFileError,
    SandboxPathNotFoundError,
    TransferTooLargeError,
    UnsafePathError,
)
from supervisor.sandbox.backends import hostfs

OWNER = 4242
P = PurePosixPath


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("secret")
    return tmp_path / "work"


def test_a_file_is_written_with_its_directories_owned_by_the_sandbox(work: Path) -> None:
    """Missing directories are made; everything made belongs to the owner."""
    size = hostfs.write_file(work, P("a/b/c.txt"), io.BytesIO(b"data"), OWNER)
    assert size == 4
    assert (work / "a" / "b" / "c.txt").read_bytes() == b"data"
    for made in (work / "a", work / "a" / "b", work / "a" / "b" / "c.txt"):
        assert made.stat().st_uid == OWNER
    assert (work / "a" / "b" / "c.txt").stat().st_mode & 0o7777 == 0o644


def test_no_write_goes_through_a_symlink(work: Path) -> None:
    """A linked directory on the way, or a link as the file itself, is refused."""
    outside = work.parent / "outside"
    (work / "dir").symlink_to(outside)
    (work / "leaf").symlink_to(outside / "secret")
    for path in ("dir/new", "dir/secret", "leaf"):
        with pytest.raises(UnsafePathError):
            hostfs.write_file(work, P(path), io.BytesIO(b"x"), OWNER)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "secret"


def test_a_hard_linked_file_is_not_overwritten(work: Path) -> None:
    """A file with another name elsewhere would be changed there too."""
    other = work.parent / "outside" / "secret"
    os.link(other, work / "hard")
    with pytest.raises(UnsafePathError):
        hostfs.write_file(work, P("hard"), io.BytesIO(b"x"), OWNER)
    assert other.read_text() == "secret"


def test_a_fifo_is_neither_written_nor_read(work: Path) -> None:
    """Opening one would block the daemon's thread: refused instead."""
    os.mkfifo(work / "pipe")
    with pytest.raises(SandboxFileError):
        hostfs.write_file(work, P("pipe"), io.BytesIO(b"x"), OWNER)
    with pytest.raises(SandboxFileError):
        hostfs.read(work, P("pipe"), 100)


def test_a_directory_reads_as_a_tar_of_what_is_safe(work: Path) -> None:
    """Files and directories with their modes, symlinks as links (not followed), fifos
    left out."""
    (work / "d").mkdir()
    (work / "d" / "f").write_text("F")
    (work / "d" / "f").chmod(0o600)
    (work / "d" / "out").symlink_to(work.parent / "outside")
    os.mkfifo(work / "d" / "pipe")
    found = hostfs.read(work, P("."), 10_000)
    assert found.is_dir
    with found.data, tarfile.open(fileobj=found.data) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert sorted(members) == ["d", "d/f", "d/out"]
        assert members["d/f"].mode == 0o600
        assert members["d/out"].issym()
        extracted = archive.extractfile(members["d/f"])
        assert extracted is not None
        assert extracted.read() == b"F"


def test_reads_refuse_links_missing_paths_and_the_oversize(work: Path) -> None:
    """A link is not followed, a missing path is not found, and the limit holds for a file
    and for a directory."""
    (work / "link").symlink_to(work.parent / "outside" / "secret")
    (work / "big").write_bytes(b"x" * 101)
    with pytest.raises(UnsafePathError):
        hostfs.read(work, P("link"), 1000)
    with pytest.raises(UnsafePathError):
        hostfs.read(work, P("link/x"), 1000)
    with pytest.raises(SandboxPathNotFoundError):
        hostfs.read(work, P("nope"), 1000)
    with pytest.raises(TransferTooLargeError):
        hostfs.read(work, P("big"), 100)
    with pytest.raises(TransferTooLargeError):
        hostfs.read(work, P("."), 100)
    with hostfs.read(work, P("big"), 101).data as data:
        assert data.read() == b"x" * 101


def test_a_listing_shows_links_as_links(work: Path) -> None:
    """Entries are sorted, typed, and never followed."""
    (work / "f").write_text("12345")
    (work / "d").mkdir()
    (work / "l").symlink_to("/etc")
    listing = hostfs.listdir(work, P("."))
    assert [(e.name, e.type) for e in listing.entries] == [
        ("d", "dir"),
        ("f", "file"),
        ("l", "symlink"),
    ]
    assert listing.entries[1].size == 5
    with pytest.raises(UnsafePathError):
        hostfs.listdir(work, P("l"))
    with pytest.raises(SandboxFileError):
        hostfs.listdir(work, P("f"))


def test_a_tar_is_extracted_owned_by_the_sandbox(work: Path) -> None:
    """Members land under the destination, owned by the owner, modes kept (setuid not)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("bin/tool")
        info.size, info.mode = 2, 0o4755
        archive.addfile(info, io.BytesIO(b"#!"))
        link = tarfile.TarInfo("bin/alias")
        link.type, link.linkname = tarfile.SYMTYPE, "tool"
        archive.addfile(link)
    buffer.seek(0)
    assert hostfs.extract_tar(work, P("x"), buffer, OWNER, 1000) == 2
    tool = work / "x" / "bin" / "tool"
    assert tool.read_bytes() == b"#!"
    assert tool.stat().st_mode & 0o7777 == 0o755
    assert tool.stat().st_uid == OWNER
    assert os.readlink(work / "x" / "bin" / "alias") == "tool"
    assert (work / "x" / "bin" / "alias").lstat().st_uid == OWNER
