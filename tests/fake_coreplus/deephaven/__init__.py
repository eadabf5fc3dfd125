"""Fake of the worker's `deephaven` module: just enough for scripts that make small tables.

The real module exists only inside a Deephaven worker; the fake console
(`deephaven_enterprise.client.session_manager._ConsoleService`) runs scripts in the
helper's own Python, where this stands in for it.
"""

from __future__ import annotations

from deephaven.column import Column
from deephaven.table import Table


def new_table(cols: list[Column]) -> Table:
    """A static table of these columns (as `deephaven.new_table`)."""
    return Table(list(cols))


def empty_table(size: int) -> Table:
    return Table([], size)
