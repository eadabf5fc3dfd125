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
