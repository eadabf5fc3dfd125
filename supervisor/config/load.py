"""Load a TOML file into a validated `Config`, or fail with every problem and its key path.

`check`, start-up and reload all come through `validate` (via `load_file`), so they
refuse the same files with the same messages. Before anything recursive runs, the text
is scanned for its bracket nesting (tomllib recurses once per level and a few thousand
levels end in RecursionError), and the parsed data is walked once, without recursion,
for depth and NUL characters. A value that failed validation is echoed back only when it
is a short scalar of a field that cannot hold a secret.
"""

from __future__ import annotations

import difflib
import re
import stat
import tomllib
import types
import typing
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from supervisor.config.reference import unwrap
from supervisor.config.schema import Config
from supervisor.config.tls import TlsProblem, server_context
from supervisor.config.types import Sensitive
from supervisor.errors import ConfigError, ConfigProblem

MAX_FILE_BYTES = 16 << 20  # a 10,000-resource config is about 1 MB
MAX_DEPTH = 32  # tables, arrays and inline tables, counted together
MAX_VALUES = 200_000  # every key and value; a 10,000-resource config has about 60,000
MAX_PROBLEMS = 100  # reported; a file with more is mostly noise after the first ones
FEATURE_PLUGINS = "supervisor.features"  # the entry-point group of third-party features
_ECHO_LIMIT = 80


def load_file(path: Path) -> Config:
    """Read and validate `path`.

    Raises:
        ConfigError: the file is unreadable, not TOML, or not a valid config.
    """
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the read for ever
            problem = ConfigProblem("", "not a regular file")
            raise ConfigError(str(path), [problem])
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), [ConfigProblem("", f"cannot read file: {exc}")]) from None
    if len(data) > MAX_FILE_BYTES:
        problem = ConfigProblem("", f"the file is larger than {MAX_FILE_BYTES >> 20} MiB")
        raise ConfigError(str(path), [problem])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = ConfigProblem("", f"not UTF-8 text (byte {exc.start})")
        raise ConfigError(str(path), [problem]) from None
    return load_text(text, source=str(path))


def load_default() -> Config:
    """The embedded default config (a copy ships as config/supervisor.toml)."""
    text = resources.files("supervisor.config").joinpath("default.toml").read_text("utf-8")
    return load_text(text, source="<embedded default>")


def load_text(text: str, *, source: str = "<string>") -> Config:
    """Parse and validate TOML text."""
    text = text.removeprefix("\ufeff")  # a byte order mark some editors write
    if (line := _too_deep(text)) is not None:
        problem = ConfigProblem("", f"nested more than {MAX_DEPTH} levels deep (line {line})")
        raise ConfigError(source, [problem])
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [_toml_problem(text, str(exc))]) from None
    except RecursionError:  # the scan above should have caught it; never a traceback
        problem = ConfigProblem("", f"nested more than {MAX_DEPTH} levels deep")
        raise ConfigError(source, [problem]) from None
    return validate(raw, source=source)


def validate(raw: dict[str, Any], *, source: str = "<dict>") -> Config:
    """Validate already-parsed data: shape, then types and ranges, then across keys."""
    problems = _walk(raw)
    if problems:
        raise ConfigError(source, problems)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        found = [_problem(err) for err in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            found.append(ConfigProblem("", f"... and {len(errors) - MAX_PROBLEMS} more problems"))
        raise ConfigError(source, found) from None
    problems = [ConfigProblem(path, msg) for path, msg in config.problems()]
    problems += _missing_plugins(config)
    problems += _unusable_token_files(config)
    problems += _unusable_tls(config)
    if problems:
        raise ConfigError(source, problems)
    return config.expanded()


_SPECIAL = re.compile(r"[\"'#\[\]{}\n=,.]")


def _string_end(text: str, start: int, quote: str) -> int:
    """Where the string opened at `start` (its first quote) ends, or -1 if it does not.

    Linear: every `find` moves forward; a backslash run is counted once per candidate.
    """
    triple = text.startswith(quote * 3, start)
    closer = quote * 3 if triple else quote
    pos = start + len(closer)
    while True:
        end = text.find(closer, pos)
        if end < 0 or (not triple and "\n" in text[pos:end]):
            return -1
        backslashes = 0
        while (
            quote == '"' and end - 1 - backslashes > start and text[end - 1 - backslashes] == "\\"
        ):
            backslashes += 1
        if backslashes % 2 == 0:
            end += len(closer)
            extra = 0
            while triple and extra < 2 and text.startswith(quote, end):
                end, extra = end + 1, extra + 1  # up to two more quotes are content
            return end
        pos = end + 1


def _too_deep(text: str) -> int | None:
    """The line where the nesting first goes deeper than MAX_DEPTH, or None.

    Counts brackets (arrays, inline tables, table headers) and the parts of a dotted key
    (tomllib spends memory quadratic in those: a 10,000-part key in a 21 KB file took
    600 MB), skipping strings and comments, in one linear pass.
    """
    pos, line = 0, 1
    stack: list[str] = []  # "[" array, "{" inline table, "h" table header
    in_key, parts = True, 0
    while (match := _SPECIAL.search(text, pos)) is not None:
        char, pos = match.group(), match.end()
        if char == "\n":
            line += 1
            if not stack:
                in_key, parts = True, 0
        elif char == "#":
            pos = text.find("\n", pos)
            if pos < 0:
                return None
        elif char in "\"'":
            end = _string_end(text, pos - 1, char)
            if end < 0:
                return None  # unterminated: tomllib says where
            line += text.count("\n", pos, end)
            pos = end
        elif char == ".":
            if in_key:
                parts += 1
                if parts >= MAX_DEPTH:
                    return line
        elif char == "=":
            in_key, parts = False, 0
        elif char == ",":
            if stack and stack[-1] == "{":
                in_key, parts = True, 0
        elif char in "[{":
            header = char == "[" and in_key and (not stack or stack[-1] == "h")
            stack.append("h" if header else char)
            if len(stack) > MAX_DEPTH:
                return line
            if char == "{":
                in_key, parts = True, 0
        elif stack and stack.pop() != "h":  # "]" or "}" closing a value
            in_key = False  # a key comes only after "," or a newline
    return None


def _walk(raw: dict[str, Any]) -> list[ConfigProblem]:
    """Depth and NUL characters, checked iteratively (pydantic and the models recurse)."""
    problems: list[ConfigProblem] = []
    stack: list[tuple[str, object, int]] = [("", raw, 0)]
    seen = 0
    while stack:
        path, value, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:  # before pydantic lists a problem for each of them
            return [ConfigProblem("", f"more than {MAX_VALUES} keys and values in all")]
        if depth > MAX_DEPTH:
            problems.append(ConfigProblem(path, f"nested more than {MAX_DEPTH} levels deep"))
            continue
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and "\x00" in key:
                    problems.append(
                        ConfigProblem(
                            where.replace("\x00", "\\0"), "keys cannot contain NUL characters"
                        )
                    )
                    continue
                stack.append((where, item, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}", item, depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str) and "\x00" in value:
            problems.append(ConfigProblem(path, "strings cannot contain NUL characters"))
    return sorted(problems, key=lambda p: p.path)


_DECODE_AT = re.compile(r"\(at (?:line (\d+), column \d+|end of document)\)")
_HEADER = re.compile(r"^\s*\[\[?\s*(.+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*([^=#\[][^=]*?)\s*=")


def _toml_problem(text: str, message: str) -> ConfigProblem:
    """A TOML syntax error; a key defined twice names its key path (tomllib does not)."""
    match = _DECODE_AT.search(message)
    twice = message.startswith(
        ("Cannot overwrite", "Cannot declare", "Cannot mutate", "Duplicate inline table key")
    )
    if match is None or not twice:
        return ConfigProblem("", f"not valid TOML: {message}")
    lines = text.splitlines()
    line_no = int(match.group(1)) if match.group(1) else len(lines)
    table = ""
    for line in lines[: line_no - 1]:
        if header := _HEADER.match(line):
            table = _unquote(header.group(1))
    current = lines[line_no - 1] if 0 < line_no <= len(lines) else ""
    if header := _HEADER.match(current):
        path = _unquote(header.group(1))
    elif key := _KEY.match(current):
        path = ".".join(p for p in (table, _unquote(key.group(1))) if p)
    else:
        path = table
    if inner := re.match(r"Duplicate inline table key '([^']*)'", message):
        path = f"{path}.{inner.group(1)}" if path else inner.group(1)
    return ConfigProblem(path, f"defined more than once (line {line_no})")


def _unquote(dotted: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in dotted.split("."))


def _unusable_token_files(config: Config) -> list[ConfigProblem]:
    """The API token files must hold tokens, two different ones: `check` says so, not the
    next start."""
    problems: list[ConfigProblem] = []
    tokens: dict[str, bytes] = {}
    for key in ("api_token_file", "api_read_token_file"):
        path = getattr(config.daemon, key)
        if path is None:
            continue
        try:
            with path.open("rb") as f:
                token = f.read(4096).strip()
        except OSError as exc:
            problems.append(ConfigProblem(f"daemon.{key}", f"cannot read {path}: {exc.strerror}"))
            continue
        if not token:
            problems.append(ConfigProblem(f"daemon.{key}", f"{path} is empty"))
            continue
        tokens[key] = token
    if len(tokens) == 2 and tokens["api_token_file"] == tokens["api_read_token_file"]:
        problems.append(
            ConfigProblem(
                "daemon.api_read_token_file",
                "holds the same token as api_token_file (the read-only token must differ)",
            )
        )
    return problems


def _unusable_tls(config: Config) -> list[ConfigProblem]:
    """The TLS cert and key must load together (the daemon builds the same context)."""
    tls = config.daemon.tls
    if tls is None:
        return []
    try:
        server_context(tls.cert, tls.key)
    except TlsProblem as exc:
        return [ConfigProblem(f"daemon.tls.{exc.key}", str(exc))]
    return []


def _missing_plugins(config: Config) -> list[ConfigProblem]:
    """Feature plugins named in the config but not installed (looked up, never loaded)."""
    wanted = [
        (f"environments.{env_name}.features.{i}.entry_point", name)
        for env_name, env in config.environments.items()
        for i, feature in enumerate(env.features)
        if (name := feature.plugin()) is not None
    ]
    if not wanted:
        return []
    installed = sorted(ep.name for ep in entry_points(group=FEATURE_PLUGINS))
    return [
        ConfigProblem(
            path,
            f"no plugin {name!r} in the {FEATURE_PLUGINS} entry-point group "
            f"(installed: {', '.join(installed) or 'none'})",
        )
        for path, name in wanted
        if name not in installed
    ]


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
            f"unknown kind {_shown(ctx.get('tag'))} (expected one of: {ctx.get('expected_tags')})",
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
        got = f" (got {_shown(err['input'])})" if not _is_secret(raw) else ""
        return ConfigProblem(
            path, f'must be a list of strings, e.g. ["python3", "-m", "http.server"]{got}'
        )
    message = err["msg"].removeprefix("Value error, ")
    if (kind.endswith("_type") or kind in {"literal_error", "enum"}) and not _is_secret(raw):
        message = f"{message} (got {_shown(err['input'])})"
    return ConfigProblem(path, message)


def _shown(value: object) -> str:
    """A rejected value as an error message may quote it: short scalars only."""
    if isinstance(value, str):
        return repr(value) if len(value) <= _ECHO_LIMIT else f"{value[:_ECHO_LIMIT]!r}..."
    if isinstance(value, bool | int | float) or value is None:
        text = repr(value)
        return text if len(text) <= _ECHO_LIMIT else "a number that large"
    return f"a {'table' if isinstance(value, dict) else type(value).__name__}"


def _is_secret(loc: list[int | str]) -> bool:
    """True if the value at `loc` (or anything it is inside) may hold a credential."""
    annotation: Any = Config
    for part in loc:
        if _marks_secret(annotation):
            return True
        annotation = unwrap(annotation)
        if (member := _union_member(annotation, part)) is not None:
            annotation = member
            continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return False
            if any(isinstance(m, Sensitive) for m in field.metadata):
                return True
            annotation = field.annotation
        elif typing.get_origin(annotation) in (dict, list):
            annotation = typing.get_args(annotation)[-1]
        else:
            return False
    return _marks_secret(annotation)


def _marks_secret(annotation: Any) -> bool:
    """SecretStr or a `Sensitive` marker in an annotation, its union members or what it
    contains (a table of secret values is itself secret: `env = "A=secret"` is not echoed)."""
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        return any(isinstance(m, Sensitive) for m in metadata) or _marks_secret(base)
    if origin in (typing.Union, types.UnionType, dict, list):
        return any(_marks_secret(a) for a in typing.get_args(annotation))
    return False


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
        annotation = unwrap(annotation)
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
    annotation = unwrap(annotation)
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
