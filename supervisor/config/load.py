"""Load a TOML file into a validated `Config`, or fail with every problem and its key path."""

from __future__ import annotations

import difflib
import tomllib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from supervisor.config.schema import Config
from supervisor.errors import ConfigError, ConfigProblem


def load_file(path: Path) -> Config:
    """Read and validate `path`.

    Raises:
        ConfigError: the file is unreadable, not TOML, or not a valid config.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [ConfigProblem("", f"cannot read file: {exc}")]) from None
    return load_text(text, source=str(path))


def load_default() -> Config:
    """The embedded default config (a copy ships as config/supervisor.toml)."""
    text = resources.files("supervisor.config").joinpath("default.toml").read_text("utf-8")
    return load_text(text, source="<embedded default>")


def load_text(text: str, *, source: str = "<string>") -> Config:
    """Parse and validate TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [ConfigProblem("", f"not valid TOML: {exc}")]) from None
    return validate(raw, source=source)


def validate(raw: dict[str, Any], *, source: str = "<dict>") -> Config:
    """Validate already-parsed data."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, [_problem(err) for err in exc.errors()]) from None
    problems = [ConfigProblem(path, msg) for path, msg in config.problems()]
    if problems:
        raise ConfigError(source, problems)
    return config


def _problem(err: ErrorDetails) -> ConfigProblem:
    raw = list(err["loc"])
    # pydantic puts the discriminator's value (the kind) into the path of a tagged union
    # member: right after a resource's name, or after a feature's list index.
    loc = [
        p
        for i, p in enumerate(raw)
        if not (
            isinstance(p, str)
            and p in _UNION_TAGS
            and ((i == 2 and raw[0] == "resources") or (i > 0 and isinstance(raw[i - 1], int)))
        )
    ]
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
    path = ".".join(str(p) for p in loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(raw[:-1])
        hint = ""
        if allowed:
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = (
                f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
            )
        return ConfigProblem(path, f"unknown key{hint}")
    if kind == "missing":
        return ConfigProblem(path, "required key is missing")
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return ConfigProblem(
            f"{path}.kind" if path else "kind",
            f"unknown kind {ctx.get('tag')!r} (expected one of: {ctx.get('expected_tags')})",
        )
    if kind == "union_tag_not_found":
        return ConfigProblem(f"{path}.kind", 'required key is missing (e.g. kind = "process")')
    if kind == "string_pattern_mismatch" and loc and loc[0] in {"resources", "environments"}:
        return ConfigProblem(
            path,
            "names must start with a letter or digit and use only letters, digits, "
            "'_', '.' and '-' (at most 63 characters)",
        )
    if kind == "list_type" and loc and loc[-1] in {"command", "exec"}:
        return ConfigProblem(
            path,
            f'must be a list of strings, e.g. ["python3", "-m", "http.server"] (got {err["input"]!r})',
        )
    message = err["msg"].removeprefix("Value error, ")
    if kind.endswith("_type") or kind in {"literal_error", "enum"}:
        message = f"{message} (got {err['input']!r})"
    return ConfigProblem(path, message)


_UNION_TAGS = {
    "deephaven-enterprise",
    "process",
    "container",
    "deephaven",
    "command",
    "files",
    "deephaven_script",
    "plugin",
}


def _allowed_keys(loc: list[int | str]) -> list[str]:
    """The keys the model at `loc` accepts, for "did you mean" hints."""
    annotation: Any = Config
    for part in loc:
        annotation = _unwrap(annotation)
        if (member := _union_member(annotation, part)) is not None:
            annotation = member  # the kind pydantic put into the path picks the model
            continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif typing.get_origin(annotation) in (dict, list):
            annotation = typing.get_args(annotation)[-1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return sorted(annotation.model_fields)
    return []


def _union_member(annotation: Any, tag: int | str) -> Any:
    """The member of a tagged union of models whose `kind` is `tag`, else None."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    for member in typing.get_args(annotation):
        field = getattr(member, "model_fields", {}).get("kind")
        if field is not None and tag in typing.get_args(field.annotation):
            return member
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and `X | None` down to the model or container type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation
