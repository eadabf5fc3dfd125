"""Durations as operators write them: "250ms", "10s", "5m", "1h30m", or a number of seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# ASCII digits only (\d takes any script's digits), and possessive: a run of digits without a unit
# must fail at once, not backtrack digit by digit (quadratic on "1" * 20000).
_PART = re.compile(r"([0-9]++(?:\.[0-9]++)?)(ms|s|m|h|d)")
MAX_TEXT = 64  # "1h30m15s500ms" is 13 characters: anything this long is not a duration
HINT = 'use e.g. "250ms", "10s", "5m", "1h30m" or a number of seconds'


def parse_duration(value: object) -> float:
    """Return `value` as seconds.

    Raises:
        ValueError: with a message that says what to write instead.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r} ({HINT})")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"duration is far too large ({HINT})") from None
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_TEXT:
            raise ValueError(f"invalid duration {value[:20]!r}... (too long; {HINT})")
        pos = 0
        seconds = 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            if len(match.group(1)) > 30:
                raise ValueError(f"duration {value[:40]!r}... is far too large ({HINT})")
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ValueError(f"invalid duration {value!r} ({HINT})")
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__} ({HINT})")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds back in the config's notation ("1.5s", "5m", "250ms")."""
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds < 1:
        return f"{seconds * 1000:.6g}ms"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
