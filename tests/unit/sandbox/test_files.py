"""Which client paths and tar members a file transfer accepts."""

from __future__ import annotations

import io
import tarfile
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.errors import SandboxFileError, TransferTooLargeError, UnsafePathError
from supervisor.sandbox.files import checked_members, clean_path, member_path, open_tar


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("a", "a"), ("a/b/", "a/b"), ("./a//b/.", "a/b"), ("", "."), (".", "."), ("a..b", "a..b")],
)
def test_relative_paths_are_normalised(raw: str, expected: str) -> None:
    """Empty and `.` components go; the workdir itself is `.`."""
    assert clean_path(raw) == PurePosixPath(expected)


@pytest.mark.parametrize("raw", ["/etc/passwd", "/", "..", "a/../..", "a/..", "a\x00b", "x" * 5000])
def test_paths_that_could_leave_are_refused(raw: str) -> None:
    """Absolute, any `..` component, NUL, and absurd lengths are refused."""
    with pytest.raises(UnsafePathError):
        clean_path(raw)


@given(st.text(alphabet="ab./\x00", max_size=30))
def test_an_accepted_path_never_climbs_or_is_absolute(raw: str) -> None:
    """Whatever is accepted stays under the workdir, lexically."""
    try:
        path = clean_path(raw)
    except UnsafePathError:
        return
    assert not path.is_absolute()
    assert ".." not in path.parts
    assert "\x00" not in str(path)


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("name", "kind", "link"),
    [
        ("../x", tarfile.REGTYPE, ""),
        ("/abs", tarfile.REGTYPE, ""),
        ("dev", tarfile.CHRTYPE, ""),
        ("blk", tarfile.BLKTYPE, ""),
        ("fifo", tarfile.FIFOTYPE, ""),
        ("hard", tarfile.LNKTYPE, "x"),
        ("etc", tarfile.SYMTYPE, "/etc"),
        ("a/up", tarfile.SYMTYPE, "../../x"),
    ],
)
def test_dangerous_members_are_refused(name: str, kind: bytes, link: str) -> None:
    """Climbing or absolute names, devices, fifos, hard links and links out of the tree."""
    with pytest.raises(UnsafePathError):
        member_path(_member(name, kind, link))


def test_links_inside_the_tree_are_accepted() -> None:
    """A symlink to a sibling, or up but not out, is fine."""
    assert member_path(_member("a/b/l", tarfile.SYMTYPE, "../c")) == PurePosixPath("a/b/l")
    assert member_path(_member("l", tarfile.SYMTYPE, "sub/x")) == PurePosixPath("l")


def _tar(*sizes: int) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for i, size in enumerate(sizes):
            info = _member(f"f{i}")
            info.size = size
            archive.addfile(info, io.BytesIO(b"x" * size))
    buffer.seek(0)
    return buffer


def test_an_archive_is_checked_whole_and_against_the_limit() -> None:
    """Its files' sizes add up against the limit; garbage is not a tar."""
    assert [str(p) for p, _ in checked_members(open_tar(_tar(10, 20)), 30)] == ["f0", "f1"]
    with pytest.raises(TransferTooLargeError):
        checked_members(open_tar(_tar(10, 21)), 30)
    with pytest.raises(SandboxFileError):
        open_tar(io.BytesIO(b"not a tar at all" * 100))
