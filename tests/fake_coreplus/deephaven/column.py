"""Fake of `deephaven.column`: columns made from Python lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Column:
    name: str
    data_type: str
    values: list[Any]


def string_col(name: str, data: list[str]) -> Column:
    return Column(name, "java.lang.String", list(data))


def int_col(name: str, data: list[int]) -> Column:
    return Column(name, "int", list(data))


def double_col(name: str, data: list[float]) -> Column:
    return Column(name, "double", list(data))
