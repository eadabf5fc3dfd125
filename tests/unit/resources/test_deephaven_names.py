"""Full names of Deephaven items: `system:source:name`."""

from __future__ import annotations

import pytest

from supervisor.resources.deephaven_names import FullName


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("community:config:local", ("community", "config", "local")),
        ("community:dynamic:worker-1", ("community", "dynamic", "worker-1")),
        ("enterprise:prod:pq-1", ("enterprise", "prod", "pq-1")),
        ("enterprise:factory:prod", ("enterprise", "factory", "prod")),
        ("enterprise:prod:a:b", ("enterprise", "prod", "a:b")),
    ],
)
def test_full_names_split_on_the_first_two_colons(text: str, parts: tuple[str, ...]) -> None:
    """The name part keeps any further colons, and the round trip is exact."""
    name = FullName.parse(text)
    assert (name.system, name.source, name.name) == parts
    assert str(name) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "community",
        "community:config",
        "community::x",
        ":config:x",
        "x:y:z",
        "community:other:x",
    ],
)
def test_malformed_full_names_are_rejected(text: str) -> None:
    """Missing or empty parts, or an unknown system or source, are errors."""
    with pytest.raises(ValueError, match=r"Deephaven name|unknown"):
        FullName.parse(text)


def test_the_factory_name_is_recognised() -> None:
    """`enterprise:factory:SYSTEM` names a system's session factory."""
    assert FullName.enterprise_factory("prod").is_factory
    assert not FullName.community("local").is_factory
