"""The API's response models (supervisor/api/models.py) describe what is sent, exactly."""

from __future__ import annotations

import json

import pytest

from supervisor.api import models
from supervisor.api.errors import error_response
from supervisor.supervision.states import Transition


@pytest.mark.parametrize(
    "event",
    [
        Transition("resource", "web", "process", "STARTING", "RUNNING", "ready", seq=3, time=1.5),
        Transition(
            "resource", "dh", "deephaven", "RUNNING", "BACKOFF", "exited", detail="exit 1",
            attempt=2, next_delay=1.0, identity="community:config:dh", seq=9, time=2.0,
        ),
        Transition("session", "box-session-1", "process", "", "active", "acquired", environment="box"),
    ],
)  # fmt: skip
def test_an_event_on_the_stream_is_an_event_model(event: Transition) -> None:
    """Every key the stream sends is in the model, and the model sends nothing more."""
    sent = event.to_json()
    assert models.Event.model_validate(sent).json_body() == sent


def test_an_error_body_is_the_error_model() -> None:
    """The one error shape, with and without problems."""
    for extra in ({}, {"problems": [{"path": "daemon.http", "message": "bad"}]}):
        body = json.loads(bytes(error_response(422, "invalid_config", "no", extra=extra).body))
        assert models.Error.model_validate(body).json_body() == body


def test_a_resource_leaves_out_a_full_name_it_does_not_have() -> None:
    """`deephaven` appears only for Deephaven resources."""
    plain = models.Resource(
        name="web", kind="process", state="RUNNING", liveness="ONLINE", detail="",
        restarts=0, since=1.0, pid=12, container_id=None, endpoint=None,
    )  # fmt: skip
    assert "deephaven" not in plain.json_body()
    named = plain.model_copy(update={"deephaven": "community:config:web"})
    assert named.json_body()["deephaven"] == "community:config:web"
