"""Which resources a list of names means: the patterns of `status`, `start`, `stop`...

A pattern is, in this order: `all` (every resource); `NAME:*` (the members of group
NAME, or every instance of resource NAME); an exact resource name (`db`, `web:1`); a
group's name (its members); the name of a resource with instances (all of them); a
shell glob over resource names (`web*`, `db-?`). A pattern
that matches nothing is an error that suggests the closest names (difflib), so a typo
never acts on nothing silently.

Pure: runs in the daemon, against the resources and groups it runs (`Config.expanded`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from supervisor.config.instances import ALL
from supervisor.errors import ResourceNotFoundError

GLOB_CHARACTERS = frozenset("*?[")
MAX_PATTERNS = 1000
MAX_PATTERN_LENGTH = 200


def matches(pattern: str, names: Sequence[str], groups: Mapping[str, Sequence[str]]) -> list[str]:
    """The resources `pattern` names (maybe none), in the order of `names`."""
    known = set(names)
    if pattern == ALL:
        return list(names)
    if pattern.endswith(":*"):
        base = pattern[:-2]
        if base in groups:
            return [n for n in groups[base] if n in known]
        return [n for n in names if n.startswith(base + ":")]
    if pattern in known:
        return [pattern]
    if pattern in groups:
        return [n for n in groups[pattern] if n in known]
    if instances := [n for n in names if n.startswith(pattern + ":")]:
        return instances  # `web` for a resource with instances: all of them
    if GLOB_CHARACTERS.intersection(pattern):
        return [n for n in names if fnmatchcase(n, pattern)]
    return []


def candidates(names: Sequence[str], groups: Mapping[str, Sequence[str]]) -> list[str]:
    """Every name a pattern may spell out: resources, groups, `GROUP:*`, `NAME:*`."""
    bases = [n.partition(":")[0] for n in names if ":" in n]
    found = [*names, *groups, *bases, *(f"{g}:*" for g in groups), *(f"{b}:*" for b in bases)]
    return list(dict.fromkeys(found))


def suggest(pattern: str, names: Sequence[str], groups: Mapping[str, Sequence[str]]) -> list[str]:
    """The names closest to a pattern that matched nothing (at most three)."""
    return difflib.get_close_matches(pattern, candidates(names, groups), n=3, cutoff=0.6)


def did_you_mean(pattern: str, names: Sequence[str], groups: Mapping[str, Sequence[str]]) -> str:
    """' (did you mean 'web'?)', or "" when nothing is close."""
    close = suggest(pattern[:MAX_PATTERN_LENGTH], names, groups)
    if len(close) == 1:
        return f" (did you mean {close[0]!r}?)"
    return f" (did you mean one of: {', '.join(repr(c) for c in close)}?)" if close else ""


def unknown_message(pattern: str, names: Sequence[str], groups: Mapping[str, Sequence[str]]) -> str:
    """'no resource or group matches 'wbe' (did you mean 'web'?)'."""
    shown = pattern[:MAX_PATTERN_LENGTH]
    return f"no resource or group matches {shown!r}{did_you_mean(shown, names, groups)}"


def select(
    patterns: Sequence[str], names: Sequence[str], groups: Mapping[str, Sequence[str]]
) -> list[str]:
    """The resources the patterns name together, in the order of `names`.

    Raises:
        ResourceNotFoundError: a pattern matches nothing (every such pattern is named).
    """
    chosen: set[str] = set()
    unknown: list[str] = []
    for pattern in patterns:
        found = matches(pattern, names, groups)
        if not found and pattern != ALL:  # `all` of nothing is nothing, not a typo
            unknown.append(pattern)
        chosen.update(found)
    if unknown:
        raise ResourceNotFoundError("; ".join(unknown_message(p, names, groups) for p in unknown))
    return [n for n in names if n in chosen]
