"""A program's output: rotation by size, the bounded tail, followers that fall behind."""

from __future__ import annotations

from pathlib import Path

from supervisor.config.output import LogConfig
from supervisor.observability.output import (
    FOLLOW_BUFFER,
    TAIL_BYTES,
    OutputLog,
    Ring,
    last_lines,
)


def test_last_lines_counts_an_unterminated_last_line_and_a_whole_first_one() -> None:
    """The last N lines, a final partial one included; a partial first one is not a line."""
    assert last_lines(b"a\nb\nc", 2, whole=False) == b"b\nc"
    assert last_lines(b"a\nb\n", 2, whole=True) == b"a\nb\n"
    assert last_lines(b"a\nb\n", 2, whole=False) is None
    assert last_lines(b"a\nb\n", 3, whole=True) is None
    assert last_lines(b"a\nb\n", 0, whole=True) == b""


def test_the_ring_keeps_exactly_the_last_bytes_written() -> None:
    """Whatever the sizes written, the ring holds the last `capacity` bytes in order."""
    ring = Ring(10)
    data = b""
    for piece in (b"abc", b"defgh", b"ijklmnop", b"q", b"0123456789012", b"xy"):
        ring.write(piece)
        data += piece
        assert ring.getvalue() == data[-10:]


def test_files_rotate_at_max_bytes_keeping_backups_and_whole_lines(tmp_path: Path) -> None:
    """Past max_bytes the file moves to .1 (older ones shift, the oldest goes); a piece
    is cut at a newline so no line is split across files."""
    log = OutputLog("p", tmp_path, LogConfig(max_bytes=4096, backups=2))
    lines = [f"{i:04d} {'x' * 94}\n".encode() for i in range(200)]  # 100 bytes each
    for start in range(0, 200, 7):
        log.write("stdout", b"".join(lines[start : start + 7]))
    log.end("stdout")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["p.stdout.log", "p.stdout.log.1", "p.stdout.log.2"]
    kept = b"".join((tmp_path / name).read_bytes() for name in reversed(files))
    assert kept == b"".join(lines[-len(kept) // 100 :])
    for name in files:
        size = (tmp_path / name).stat().st_size
        assert size <= 4096
        assert size % 100 == 0  # whole lines only


def test_a_line_longer_than_a_file_is_split_rather_than_lost(tmp_path: Path) -> None:
    """One line over max_bytes fills whole files; nothing is dropped but by rotation."""
    log = OutputLog("p", tmp_path, LogConfig(max_bytes=4096, backups=3))
    log.write("stderr", b"y" * 10_000 + b"\n")
    log.end("stderr")
    sizes = [(tmp_path / f"p.stderr.log{s}").stat().st_size for s in ("", ".1", ".2")]
    assert sizes == [10_001 - 2 * 4096, 4096, 4096]


def test_no_descriptor_is_held_before_output_or_after_the_pipe_ends(tmp_path: Path) -> None:
    """A quiet resource holds no file and no tail; the file closes at end-of-file."""
    log = OutputLog("p", tmp_path, LogConfig())
    assert not log.stdout.is_open
    assert log.stdout.snapshot() == (b"", -1)
    assert not tmp_path.joinpath("p.stdout.log").exists()
    log.write("stdout", b"hello\n")
    assert log.stdout.is_open
    log.end("stdout")
    assert not log.stdout.is_open


def test_memory_target_writes_no_file_and_keeps_a_bounded_tail(tmp_path: Path) -> None:
    """`target = "memory"` keeps only the last TAIL_BYTES in memory."""
    log = OutputLog("p", tmp_path, LogConfig(target="memory"))
    for i in range(10_000):
        log.write("stdout", f"line {i}\n".encode())
    assert list(tmp_path.iterdir()) == []
    tail, _ = log.stdout.snapshot()
    assert len(tail) == TAIL_BYTES
    assert tail.endswith(b"line 9999\n")


async def test_tail_reads_back_from_the_files_when_memory_holds_too_few_lines(
    tmp_path: Path,
) -> None:
    """Lines beyond the in-memory tail come from the current file and its backups."""
    log = OutputLog("p", tmp_path, LogConfig(max_bytes=64 * 1024, backups=5))
    for i in range(5000):
        log.write("stdout", f"{i:06d}\n".encode())
    got = await log.tail("stdout", 4000)
    assert got.decode().split() == [f"{i:06d}" for i in range(1000, 5000)]


async def test_a_follower_gets_new_pieces_and_one_that_falls_behind_is_cut_off(
    tmp_path: Path,
) -> None:
    """Followers see each piece after the tail; past FOLLOW_BUFFER unread, the stream ends."""
    log = OutputLog("p", tmp_path, LogConfig())
    log.write("stdout", b"old\n")
    reader = log.read("stdout", 10, follow=True)
    assert await reader.__anext__() == b"old\n"
    log.write("stdout", b"new\n")
    assert await reader.__anext__() == b"new\n"
    for _ in range(FOLLOW_BUFFER + 1):
        log.write("stdout", b"flood\n")
    pieces = [piece async for piece in reader]
    assert pieces == [b"flood\n"] * FOLLOW_BUFFER  # what was queued, then the end
    await reader.aclose()
