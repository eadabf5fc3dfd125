"""A Deephaven sandbox has no files: every file transfer is a clear 400."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any, cast

import pytest

from supervisor.api.errors import Answer, answer_for
from supervisor.errors import UnsupportedError
from supervisor.sandbox.backends.deephaven import DeephavenInstance


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
