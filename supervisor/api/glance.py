"""`GET /v1/glance`: the last hour, minute by minute, for the console's small charts.

The counters live in the daemon (`observability.glance`); this route only reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from supervisor.api import models
from supervisor.api.models import reply
from supervisor.api.spec import ApiRoute, Operation

GLANCE = Operation(
    "The last hour, minute by minute: resource restarts, transitions and state counts",
    {200: models.Glance},
    access="read",
    description="60 minutes, oldest first; the current minute last, counted so far. The "
    "daemon keeps them itself (a ring of 60 per-minute counters), so they need no "
    "Prometheus and survive the event ring's turnover; they start empty with the daemon.",
)


class Glanced(Protocol):
    """What the route needs from the daemon (part of `api.app.Control`)."""

    def glance(self) -> Sequence[Mapping[str, Any]]:
        """The last hour's minutes, oldest first, as JSON objects."""


def glance_routes(control: Glanced) -> list[ApiRoute]:
    """/v1/glance."""

    async def glance(request: Request) -> Response:
        minutes = [models.GlanceMinute.model_validate(m) for m in control.glance()]
        return reply(models.Glance(minutes=minutes))

    return [ApiRoute("/v1/glance", glance, "GET", GLANCE)]
