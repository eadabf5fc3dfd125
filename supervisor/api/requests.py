"""What clients send: request bodies and query parameters, read with limits and validated
into models before a handler sees them.

A body must be JSON (`application/json` or a `+json` type; anything else is 415), at
most `MAX_JSON_BODY` bytes (the edge answers 413 before reading more), nested at most
`MAX_JSON_DEPTH` levels (checked by a linear scan before `json.loads`, which recurses),
and an object; then the route's model validates it strictly, and every problem is
reported with the field it is about (422). Query parameters are parsed from text with
their own bounds (400 naming the parameter).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from starlette.requests import Request

from supervisor.api.errors import ApiError
from supervisor.config.durations import parse_duration
from supervisor.config.types import signal_name

MAX_JSON_BODY = 1 << 20
MAX_JSON_DEPTH = 32
MAX_LABELS = 32
MAX_LABEL_LENGTH = 256
MAX_TIMEOUT = 86_400.0
MAX_ARGS = 4096
MAX_SCRIPT = 1 << 20
MAX_ENV = 256  # variables per exec
MAX_ENV_VALUE = 32_768
MAX_PATH = 4096
MAX_STDIN = MAX_JSON_BODY  # characters (the body bounds it anyway)

M = TypeVar("M", bound=BaseModel)


def _seconds(value: object) -> float:
    seconds = parse_duration(value)  # raises ValueError with a hint
    if seconds > MAX_TIMEOUT:
        raise ValueError(f"must be at most {MAX_TIMEOUT:g}s")
    return seconds


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


Seconds = Annotated[float, BeforeValidator(_seconds)]
PositiveSeconds = Annotated[float, BeforeValidator(_seconds), AfterValidator(_positive)]
# Keys are names (letters, digits and ._:/-); values are printable text.
LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,255}$")]
Label = Annotated[
    str, StringConstraints(max_length=MAX_LABEL_LENGTH, pattern=r"^[^\x00-\x1f\x7f]*$")
]


def _argv(argv: list[str]) -> list[str]:
    if not any(c.isprintable() and not c.isspace() for c in argv[0]):
        raise ValueError("the program (the first element) must not be blank")
    return argv


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("cannot contain NUL characters")
    return text


def _relative(path: str) -> str:
    if path.startswith("/"):
        raise ValueError("must be relative to the sandbox's work directory")
    if ".." in path.split("/"):
        raise ValueError('must not contain ".." (it stays inside the work directory)')
    return path


Arg = Annotated[str, StringConstraints(min_length=1), AfterValidator(_no_nul)]
EnvName = Annotated[
    str, StringConstraints(max_length=MAX_LABEL_LENGTH, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
EnvValue = Annotated[str, StringConstraints(max_length=MAX_ENV_VALUE), AfterValidator(_no_nul)]
WorkPath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_PATH),
    AfterValidator(_no_nul),
    AfterValidator(_relative),
]
Script = Annotated[str, StringConstraints(max_length=MAX_SCRIPT), AfterValidator(_no_nul)]


class RequestModel(BaseModel):
    """Strict (no "1" for 1, no 1 for true) and closed: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Empty(RequestModel):
    """A route that takes no body (an empty body or `{}`)."""


class AcquireRequest(RequestModel):
    """`POST /v1/environments/{env}/sessions`."""

    ttl: PositiveSeconds | None = None
    wait: Seconds | None = None
    labels: Annotated[dict[LabelKey, Label], Field(max_length=MAX_LABELS)] | None = None


class ExecRequest(RequestModel):
    """`POST /v1/sessions/{id}/exec`: exactly one of `command` and `script`; `env` is added
    to the sandbox's environment, `cwd` is relative to its work directory, `stdin` is fed
    to the command and then closed; `background` answers at once with a handle
    (`api.commands`)."""

    command: Annotated[list[Arg], Field(min_length=1, max_length=MAX_ARGS)] | None = None
    script: Script | None = None
    timeout: PositiveSeconds | None = None
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=MAX_ENV)] | None = None
    cwd: WorkPath | None = None
    stdin: Annotated[str, StringConstraints(max_length=MAX_STDIN)] | None = None
    background: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.command is None) == (self.script is None):
            raise ValueError("give exactly one of command or script")
        if self.command is not None:
            _argv(self.command)
        return self


class StdinRequest(RequestModel):
    """`POST /v1/sessions/{id}/commands/{cid}/stdin`: more input; `close` ends it."""

    data: Annotated[str, StringConstraints(max_length=MAX_STDIN)] = ""
    close: bool = False


class SignalRequest(RequestModel):
    """`POST /v1/sessions/{id}/commands/{cid}/signal`: a signal by name."""

    # The ones every backend can deliver (docker: through `timeout`, which passes these on).
    signal: Literal["HUP", "INT", "QUIT", "TERM", "KILL"]


class ReloadRequest(RequestModel):
    """`POST /v1/reload`."""

    dry_run: bool = False
    plan: Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")] | None = Field(
        default=None,
        description="apply only if this is still the plan's hash (from a dry run); else 409",
    )


def _json_content(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json" and not (
        kind.startswith("application/") and kind.endswith("+json")
    ):
        shown = kind[:64] or "none"
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the body must be JSON: send Content-Type: application/json (got {shown})",
        )


def _depth(value: object) -> int:
    """How deeply `value` nests lists and dicts, walked without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
            stack.extend(
                (child, depth) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {key[:64]!r}")
        found[key] = value
    return found


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object ({} when empty), within the limits above."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:  # a chunked body; the edge checks declared sizes
            raise ApiError(
                413, "body_too_large", f"the body is over {MAX_JSON_BODY} bytes",
                headers={"connection": "close"},
            )  # fmt: skip
    if not body.strip():
        return {}
    _json_content(request)
    too_deep = f"the body nests more than {MAX_JSON_DEPTH} levels deep"
    try:
        # The C decoder guards its own recursion (RecursionError, quickly): no pre-scan,
        # which for a regex is quadratic on a body of unterminated strings.
        text = bytes(body).decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ApiError(400, "bad_request", too_deep) from None
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_request", f"the body is not UTF-8 (byte {exc.start})") from None
    except ValueError as exc:
        raise ApiError(
            400, "bad_request", f"the body is not valid JSON: {str(exc)[:200]}"
        ) from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise ApiError(400, "bad_request", too_deep)
    if not isinstance(data, dict):
        raise ApiError(422, "unprocessable", "the body must be a JSON object")
    return data


async def parse_body(request: Request, model: type[M]) -> M:
    """The body validated as `model`; 422 lists every problem with its field."""
    data = await read_json(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(err) for err in exc.errors(include_url=False, include_input=False)]
        raise ApiError(
            422,
            "unprocessable",
            "; ".join(
                f"{p['path']}: {p['message']}" if p["path"] else p["message"] for p in problems
            ),
            extra={"problems": problems},
        ) from None


def _problem(err: Any) -> dict[str, str]:
    path = ".".join(str(p) for p in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    return {"path": path[:200], "message": message}


def query_int(request: Request, name: str, *, low: int = 0, high: int = 2**63 - 1) -> int | None:
    """An integer query parameter within [low, high], or None if absent; 400 otherwise."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > len(str(high)):
        raise ApiError(
            400,
            "bad_request",
            f"{name}: expected an integer from {low} to {high}, got {raw[:32]!r}",
        )
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"{name}: must be from {low} to {high}")
    return value


def query_bool(request: Request, name: str) -> bool | None:
    """A boolean query parameter (1/0, true/false, yes/no), or None if absent; 400 otherwise."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise ApiError(400, "bad_request", f"{name}: expected true or false, got {raw[:32]!r}")


def header_text(request: Request, name: str, *, max_length: int) -> str | None:
    """A header's value, at most `max_length` characters; 400 otherwise."""
    raw = request.headers.get(name)
    if raw is not None and not 0 < len(raw) <= max_length:
        raise ApiError(400, "bad_request", f"{name} must be 1-{max_length} characters")
    return raw


MAX_PATTERNS = 1000
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_nul)]


class ActionsRequest(RequestModel):
    """`POST /v1/actions/{action}`: resource names or patterns (`config.selection`)."""

    names: Annotated[list[Pattern], Field(min_length=1, max_length=MAX_PATTERNS)]


class ResourceSignalRequest(RequestModel):
    """`POST /v1/resources/{name}/signal`: a signal by name ("HUP", "SIGUSR1") or number."""

    signal: Annotated[str, BeforeValidator(signal_name)]


class SignInRequest(RequestModel):
    """`POST /console/session`: the API token (full or read-only)."""

    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
