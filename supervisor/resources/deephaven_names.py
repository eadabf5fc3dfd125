"""Full names of Deephaven items: `system:source:name`, the identity shown in status and logs.

`community:config:NAME` is a session from the config file, `community:dynamic:NAME` one
created at run time, `enterprise:SYSTEM:NAME` a session of an Enterprise system and
`enterprise:factory:SYSTEM` that system's session factory. Parsing splits on the first
two colons only, so a name may itself contain colons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

SYSTEMS = frozenset({"community", "enterprise"})
COMMUNITY_SOURCES = frozenset({"config", "dynamic"})


@dataclass(frozen=True, slots=True)
class FullName:
    """A parsed `system:source:name`."""

    system: str
    source: str
    name: str

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse `text`.

        Raises:
            ValueError: not three non-empty parts, or an unknown system or source.
        """
        parts = text.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                f"invalid Deephaven name {text!r} (expected system:source:name, "
                'e.g. "community:config:local" or "enterprise:prod:pq-1")'
            )
        system, source, name = parts
        if system not in SYSTEMS:
            raise ValueError(f"unknown system {system!r} in {text!r} (community or enterprise)")
        if system == "community" and source not in COMMUNITY_SOURCES:
            raise ValueError(f"unknown source {source!r} in {text!r} (config or dynamic)")
        return cls(system, source, name)

    @classmethod
    def community(cls, name: str, *, dynamic: bool = False) -> Self:
        return cls("community", "dynamic" if dynamic else "config", name)

    @classmethod
    def enterprise_factory(cls, system: str) -> Self:
        return cls("enterprise", "factory", system)

    @classmethod
    def enterprise(cls, system: str, name: str) -> Self:
        return cls("enterprise", system, name)

    @property
    def is_factory(self) -> bool:
        return self.system == "enterprise" and self.source == "factory"

    def __str__(self) -> str:
        return f"{self.system}:{self.source}:{self.name}"
