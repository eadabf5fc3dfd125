"""Fake of `deephaven.table.Table`: the attributes scripts and the MCP tools read."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any


class Table:
    def __init__(self, columns: list[Any], size: int | None = None) -> None:
        self._columns = columns
        self.size = size if size is not None else (len(columns[0].values) if columns else 0)
        self.is_refreshing = False

    @property
    def columns(self) -> list[Any]:
        return [SimpleNamespace(name=c.name, data_type=c.data_type) for c in self._columns]

    def head(self, n: int) -> Table:
        cut = [type(c)(c.name, c.data_type, c.values[:n]) for c in self._columns]
        return Table(cut, min(n, self.size))

    def iter_dict(self) -> Iterator[dict[str, Any]]:
        for i in range(self.size):
            yield {c.name: c.values[i] for c in self._columns}

    def to_arrow(self) -> Any:
        """What pydeephaven's `Table.to_arrow()` gives, as far as `.column(name).to_pylist()`."""
        by_name = {c.name: c.values for c in self._columns}
        return SimpleNamespace(
            column=lambda name: SimpleNamespace(to_pylist=lambda: list(by_name[name]))
        )
