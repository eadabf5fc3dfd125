"""What the command line prints: the status tables and one line per event."""

from __future__ import annotations

import time
from typing import Any

from supervisor.config.durations import format_duration


def format_environments(environments: list[dict[str, Any]]) -> str:
    """The environments table under `status`."""
    header = ("ENVIRONMENT", "BACKEND", "STATUS", "READY", "BUSY", "SIZE", "SESSIONS", "WAITERS")
    rows = [header]
    for env in environments:
        counts = env["sandboxes"]
        busy = sum(counts[s] for s in ("ACQUIRED", "IN_SESSION", "EXITING_SESSION", "SETTING_UP"))
        status = "OUTAGE" if env["outage"] else env["status"]
        rows.append(
            (
                env["name"],
                env["backend"],
                status,
                str(counts["READY"]),
                str(busy),
                f"{env['min_ready']}..{env['max_size']}",
                str(env["active_sessions"]),
                str(env["waiters"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def format_status(resources: list[dict[str, Any]], *, now: float) -> str:
    """The `status` table."""
    header = ("NAME", "KIND", "STATE", "LIVENESS", "UPTIME", "RESTARTS", "PID/CONTAINER", "DETAIL")
    rows = [header]
    for r in resources:
        uptime = (
            format_duration(round(max(0.0, now - r["since"]))) if r["state"] == "RUNNING" else "-"
        )
        ident = r.get("container_id") or (str(r["pid"]) if r.get("pid") else "-")
        rows.append(
            (
                r["name"],
                r["kind"],
                r["state"],
                r["liveness"],
                uptime,
                str(r["restarts"]),
                ident,
                r.get("detail") or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def format_event(event: dict[str, Any]) -> str:
    """One line per event, readable in a terminal."""
    if "gap" in event:
        gap = event["gap"]
        return f"-- events after #{gap['since']} up to #{gap['first_available'] - 1} were dropped from the buffer --"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(event["time"]))
    line = f"{stamp}Z #{event['seq']} {event['subject']} {event['name']}: {event['from']} -> {event['to']} ({event['reason']}"
    if event.get("detail"):
        line += f": {event['detail']}"
    if event.get("next_delay") is not None and event["to"] in ("BACKOFF", "FATAL"):
        line += f"; next try in {format_duration(round(event['next_delay'], 3))}"
    return line + ")"
