"""A launched server's output: secrets redacted, start-up and bind failures noticed."""

from __future__ import annotations

from pathlib import Path

import structlog
from hypothesis import given
from hypothesis import strategies as st

from supervisor.config.output import LogConfig
from supervisor.launchers.deephaven.output import (
    REDACTED,
    Redactor,
    ServerOutput,
    StreamRedactor,
    is_bind_failure,
    started_port,
)
from supervisor.launchers.deephaven.server import generate_psk
from supervisor.observability.output import OutputLog


@given(st.text(min_size=1), st.text())
def test_redaction_removes_every_occurrence(secret: str, line: str) -> None:
    """A secret anywhere in a line, any number of times, never survives redaction."""
    redacted = Redactor([secret])(line + secret + line + secret)
    assert secret not in redacted.replace(REDACTED, "") or secret in REDACTED


@given(
    st.text(min_size=1, max_size=40).filter(lambda s: s not in REDACTED),
    st.lists(st.binary(max_size=30), max_size=8),
    st.data(),
)
def test_a_stream_in_any_pieces_is_redacted_as_a_whole(
    key: str, parts: list[bytes], data: st.DataObject
) -> None:
    """Whatever pieces the stream comes in (a secret cut anywhere), what passes is what
    redacting it whole gives: no secret, and nothing else lost or changed."""
    secret = key.encode()
    whole = secret.join(parts) + secret
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=10)))
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    redact = StreamRedactor([key])
    passed = b"".join(redact.feed(piece) for piece in pieces) + redact.flush()
    assert passed == whole.replace(secret, REDACTED.encode())


def test_a_stream_is_held_back_only_where_a_secret_may_begin() -> None:
    """A piece that cannot end inside the key passes at once; one that may is held for
    just the possible beginning, until the next piece decides."""
    psk = "k3y-" + generate_psk()
    redact = StreamRedactor([psk])
    assert redact.feed(b"Server started on port 10000\n") == b"Server started on port 10000\n"
    assert redact.feed(b"use k3") == b"use "
    assert redact.feed(b"y-" + psk[4:].encode() + b" to connect\n") == (
        f"{REDACTED} to connect\n".encode()
    )
    assert redact.feed(b"ends with k") == b"ends with "
    assert redact.flush() == b"k"


def test_server_output_markers() -> None:
    """The start line gives the port; a taken port is recognised from the JVM's error."""
    assert started_port("Server started on port 10123") == 10123
    assert started_port("Starting server") is None
    assert is_bind_failure("caused by java.net.BindException: Address already in use")


async def test_kept_output_is_redacted_and_relayed_only_when_asked(tmp_path: Path) -> None:
    """A line holding the key is kept (files and tail) with the key redacted; without a
    logger nothing reaches the daemon's log, with one the redacted line does."""
    psk = generate_psk()
    kept = OutputLog("dh", tmp_path, LogConfig())
    quiet = ServerOutput(Redactor([psk]), None, kept)
    with structlog.testing.capture_logs() as captured:
        quiet.line("stdout", f"key is {psk}")
        quiet.line("stdout", "Server started on port 10123")
        ServerOutput(Redactor([psk]), structlog.get_logger(), kept).line("stderr", psk)
    kept.end("stdout")
    kept.end("stderr")
    expected = f"key is {REDACTED}\nServer started on port 10123\n"
    assert await kept.tail("stdout", 10) == expected.encode()
    assert (tmp_path / "dh.stdout.log").read_text() == expected
    assert (tmp_path / "dh.stderr.log").read_text() == f"{REDACTED}\n"
    assert quiet.started.is_set()
    assert [e["line"] for e in captured if e["event"] == "output"] == [REDACTED]
