"""The deephaven backend's refusal of exec options it cannot honour."""

from __future__ import annotations

import pytest

from supervisor.api.errors import to_response
from supervisor.errors import ExecRefusedError
from supervisor.sandbox.backends.deephaven import refuse_shaped
from supervisor.sandbox.instance import PLAIN, ExecOptions


@pytest.mark.parametrize(
    "options",
    [ExecOptions(cwd="sub"), ExecOptions(stdin=b"x"), ExecOptions(env={"A": "1"})],
)
def test_cwd_stdin_and_env_are_refused_with_a_422(options: ExecOptions) -> None:
    """A Deephaven server has no cwd, stdin or env per exec: a clear 4xx, not a silent drop."""
    with pytest.raises(ExecRefusedError, match="leave out cwd, stdin and env") as caught:
        refuse_shaped(options)
    response = to_response(caught.value)
    assert response is not None
    assert response.status_code == 422


def test_plain_and_streamed_execs_are_accepted() -> None:
    """Streaming only changes where output goes: the server's output comes in one piece."""
    refuse_shaped(PLAIN)
    refuse_shaped(ExecOptions(output=lambda stream, data: None))
