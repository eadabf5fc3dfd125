"""A launched server's output: secrets redacted, start-up and bind failures noticed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from supervisor.launchers.deephaven.output import (
    REDACTED,
    Redactor,
    is_bind_failure,
    started_port,
)


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
