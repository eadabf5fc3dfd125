"""What a Deephaven sandbox cannot do: files, and cwd, stdin or env per exec (a clear 400)."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any, cast

import pytest

from supervisor.api.errors import Answer, answer_for
from supervisor.errors import ExecRefusedError, UnsupportedError
from supervisor.sandbox.backends.deephaven import DeephavenInstance, refuse_shaped
from supervisor.sandbox.instance import PLAIN, ExecOptions


async def test_file_transfers_are_unsupported() -> None:
    """put, get and list all raise UnsupportedError, which the API answers 400."""
    instance = DeephavenInstance(
        cast(Any, None), cast(Any, SimpleNamespace(name="dh")), cast(Any, None)
    )
    with pytest.raises(UnsupportedError, match="deephaven") as raised:
        await instance.upload("a", io.BytesIO(b"x"), tar=False, limit=10)
    with pytest.raises(UnsupportedError):
        await instance.download("a", 10)
    with pytest.raises(UnsupportedError):
        await instance.listdir(".")
    assert answer_for(raised.value) == Answer(400, "unsupported")


@pytest.mark.parametrize(
    "options",
    [ExecOptions(cwd="sub"), ExecOptions(stdin=b"x"), ExecOptions(env={"A": "1"})],
)
def test_cwd_stdin_and_env_are_refused_with_a_400(options: ExecOptions) -> None:
    """A Deephaven server has no cwd, stdin or env per exec: a clear 400, not a silent drop."""
    with pytest.raises(ExecRefusedError, match="leave out cwd, stdin and env") as caught:
        refuse_shaped(options)
    assert answer_for(caught.value) == Answer(400, "unsupported")


def test_plain_and_streamed_execs_are_accepted() -> None:
    """Streaming only changes where output goes: the server's output comes in one piece."""
    refuse_shaped(PLAIN)
    refuse_shaped(ExecOptions(output=lambda stream, data: None))
