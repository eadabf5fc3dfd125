"""Name patterns of status/start/stop/restart: exact names, GROUP:*, globs, all; typos."""

from __future__ import annotations

import pytest

from supervisor.config.selection import select, suggest
from supervisor.errors import ResourceNotFoundError

NAMES = ["web:0", "web:1", "db", "worker", "cache"]
GROUPS = {"back": ["db", "cache"]}


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["db"], ["db"]),
        (["web:1"], ["web:1"]),
        (["back:*"], ["db", "cache"]),
        (["back"], ["db", "cache"]),
        (["web:*"], ["web:0", "web:1"]),
        (["web"], ["web:0", "web:1"]),
        (["w*"], ["web:0", "web:1", "worker"]),
        (["?b"], ["db"]),
        (["all"], NAMES),
        (["cache", "db", "db"], ["db", "cache"]),
    ],
)
def test_patterns_select_resources_in_the_daemons_order(
    patterns: list[str], expected: list[str]
) -> None:
    """Each pattern form selects its resources, once each, in the daemon's order."""
    assert select(patterns, NAMES, GROUPS) == expected


def test_a_pattern_matching_nothing_is_refused_with_suggestions() -> None:
    """An unknown name is an error that names it and suggests the closest names."""
    with pytest.raises(ResourceNotFoundError) as info:
        select(["db", "wroker"], NAMES, GROUPS)
    assert str(info.value) == "no resource or group matches 'wroker' (did you mean 'worker'?)"


def test_every_unknown_pattern_is_named() -> None:
    """Two unknown patterns: both are in the message, and nothing is selected."""
    with pytest.raises(ResourceNotFoundError, match=r"'zzz'.*'qqq'"):
        select(["zzz", "qqq"], NAMES, GROUPS)


def test_suggestions_include_groups_and_instance_sets() -> None:
    """A near miss of `back:*` or `web:*` suggests them."""
    assert suggest("bak:*", NAMES, GROUPS)[0] == "back:*"
    assert "web:*" in suggest("wb:*", NAMES, GROUPS)


def test_all_of_no_resources_is_not_an_error() -> None:
    """`all` on a daemon without resources selects nothing and raises nothing."""
    assert select(["all"], [], {}) == []
