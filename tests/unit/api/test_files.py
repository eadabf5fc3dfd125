"""The edge's body limit for file uploads."""

from __future__ import annotations

from typing import IO, Any

from supervisor.api.files import body_limit


class Limits:
    """Sessions by id, each with its environment's file_limit."""

    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = limits

    def file_limit(self, session_id: str) -> int | None:
        return self.limits.get(session_id)

    async def put_files(self, session_id: str, path: str, data: IO[bytes], *, tar: bool) -> None:
        raise NotImplementedError

    async def get_files(self, session_id: str, path: str) -> Any:
        raise NotImplementedError

    async def list_files(self, session_id: str, path: str) -> Any:
        raise NotImplementedError


def test_an_upload_gets_its_environments_file_limit() -> None:
    """A PUT of files to a live session may be as big as its file_limit; anything else
    (other routes, other methods, unknown sessions) keeps the JSON limit."""
    limit_for = body_limit(Limits({"s1": 5000}), 100)
    assert limit_for({"method": "PUT", "path": "/v1/sessions/s1/files"}) == 5000
    assert limit_for({"method": "PUT", "path": "/v1/sessions/s2/files"}) == 100
    assert limit_for({"method": "POST", "path": "/v1/sessions/s1/files"}) == 100
    assert limit_for({"method": "PUT", "path": "/v1/sessions/s1/files/x"}) == 100
    assert limit_for({"method": "POST", "path": "/v1/sessions/s1/exec"}) == 100
    assert body_limit(None, 100)({"method": "PUT", "path": "/v1/sessions/s1/files"}) == 100
