"""The API's one error table (supervisor/api/errors.py)."""

from __future__ import annotations

import json

import pytest

from supervisor import errors
from supervisor.api.errors import ERRORS, answer_for, to_response
from supervisor.api.server import ApiBindError
from supervisor.errors import ClientError, StateDirError, SupervisorError

# Raised only where no request is being answered: by the client library, or at start-up.
NEVER_IN_A_REQUEST = (ClientError, StateDirError, ApiBindError)


def tree(root: type[SupervisorError]) -> set[type[SupervisorError]]:
    found = {root}
    for sub in root.__subclasses__():
        found |= tree(sub)
    return found


def instance(cls: type[SupervisorError]) -> SupervisorError:
    if issubclass(cls, errors.ConfigError):
        return cls("config.toml", [errors.ConfigProblem("daemon.http", "bad")])
    if issubclass(cls, errors.FeatureTeardownError | errors.SessionTeardownError):
        return cls({"f": ValueError("x")})
    if issubclass(cls, errors.RequestError):
        return cls(400, "bad_request", "x")
    return cls("boom")


@pytest.mark.parametrize(
    "cls",
    sorted(
        (
            c
            for c in tree(SupervisorError)
            if c is not SupervisorError
            and not c.__name__.startswith("_")  # a shared base, never raised itself
            and not issubclass(c, NEVER_IN_A_REQUEST)
        ),
        key=lambda c: c.__name__,
    ),
)
def test_every_domain_error_the_api_can_meet_has_an_answer(cls: type[SupervisorError]) -> None:
    """Every error class of the tree (but the client's and start-up's) maps to a row, and
    the answer is a 4xx or a 5xx in the one error shape."""
    exc = instance(cls)
    found = answer_for(exc)
    assert found is not None, f"{cls.__name__} has no row in api.errors.ERRORS"
    response = to_response(exc)
    assert response is not None
    body = json.loads(bytes(response.body))
    assert set(body["error"]) >= {"code", "message", "retryable"}
    assert 400 <= response.status_code < 600


def test_an_error_of_two_families_has_its_own_row() -> None:
    """A class with several error bases is mapped explicitly, not by whichever base its
    MRO meets first (SessionNotFoundError is a SandboxError and a NotFoundError)."""
    for cls in tree(SupervisorError):
        bases = [b for b in cls.__bases__ if issubclass(b, SupervisorError)]
        if len(bases) > 1:
            assert cls in ERRORS, cls.__name__


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.ResourceNotFoundError("x"), 404, "not_found"),
        (errors.SessionNotFoundError("x"), 404, "not_found"),
        (errors.SessionExpiredError("x"), 410, "expired"),
        (errors.SessionBusyError("x"), 409, "conflict"),
        (errors.NotRunningError("x"), 409, "not_running"),
        (errors.PoolOverloadedError("x", retry_after=2.5), 503, "overloaded"),
        (errors.EnvironmentOutageError("x"), 503, "outage"),
        (errors.SandboxStateError("x"), 503, "sandbox_failed"),
        (errors.ReloadUnavailableError("x"), 501, "not_implemented"),
        (errors.UnsafePathError("x"), 400, "unsafe_path"),
        (errors.SandboxFileError("x"), 400, "bad_file_request"),
        (errors.UnsupportedError("x"), 400, "unsupported"),
        (errors.TransferTooLargeError("x"), 413, "body_too_large"),
        (errors.SandboxPathNotFoundError("x"), 404, "not_found"),
    ],
)
def test_the_table_answers_as_documented(exc: SupervisorError, status: int, code: str) -> None:
    """Status and code per error, as the README's API section lists them."""
    response = to_response(exc)
    assert response is not None
    assert response.status_code == status
    assert json.loads(bytes(response.body))["error"]["code"] == code


def test_an_overloaded_pool_says_when_to_retry() -> None:
    """503 overloaded carries Retry-After, rounded up to whole seconds."""
    response = to_response(errors.PoolOverloadedError("busy", retry_after=2.5))
    assert response is not None
    assert response.headers["retry-after"] == "3"
