"""structlog set-up: JSON lines for journald, a console renderer on a terminal.

The transition listener turns every transition on the bus into one log event carrying
resource, from, to, reason, attempt and next delay, at a level that matches its gravity;
the bus's other events (a feature hook that ran, an acquire refused) are the metrics'.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from supervisor.supervision.states import Event, Transition

log = structlog.get_logger("supervisor.events")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    log_format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog once, at the composition root."""
    stream = stream or sys.stderr
    console = log_format == "console" or (log_format == "auto" and stream.isatty())
    # Tracebacks never carry frame locals: a local can hold a token or a PSK.
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        if console
        else structlog.processors.JSONRenderer()
    )
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if not console:
        processors += [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        ]
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


def log_transition(event: Event) -> None:
    """Bus listener: one log event per state change."""
    if not isinstance(event, Transition):
        return
    fields: dict[str, object] = {
        event.subject: event.name,
        "kind": event.kind,
        "from": event.from_state,
        "to": event.to_state,
        "reason": event.reason,
        "seq": event.seq,
    }
    if event.environment:
        fields["environment"] = event.environment
    if event.identity:
        fields["deephaven"] = event.identity
    if event.detail:
        fields["detail"] = event.detail
    if event.attempt:
        fields["attempt"] = event.attempt
    if event.next_delay is not None:
        fields["next_delay"] = round(event.next_delay, 3)
    if event.subject == "sandbox":
        log.debug("state_changed", **fields)  # sessions and environments carry the story
    elif event.to_state == "FATAL":
        log.error("state_changed", **fields)
    elif event.to_state == "BACKOFF":
        log.warning("state_changed", **fields)
    else:
        log.info("state_changed", **fields)
