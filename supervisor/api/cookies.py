"""Console sign-in: an API token exchanged for a session cookie, and the CSRF rules.

A browser cannot keep a bearer token safely (anything a script can read, an injected
script can read too) and an `EventSource` cannot send one, so the console signs in once:
`POST /console/session` with the token answers an opaque, random session id in an
`HttpOnly; SameSite=Strict` cookie (`Secure` on a TLS listener), never the token itself.
The session carries the token's access ("full" or "read") and lives in memory: a
restart of the daemon signs everyone out, signing out ends it at once, and a bounded
table (oldest dropped first) means no number of sign-ins can grow the daemon.

A cookie is sent by the browser on its own, so a request it authenticates must prove it
comes from the console's own page before it may change anything (CSRF): every method but
GET/HEAD needs the `X-CSRF-Token` header holding the session's own random token (which
only a script of the same origin can read, from `GET /console/session`), and an `Origin`
header, when the browser sends one, must be this listener's own. SameSite=Strict already
keeps the cookie off cross-site requests; the header and the Origin check hold even where
it does not (an old browser, a sibling subdomain).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Scope

from supervisor.api.spec import Access

COOKIE = "supervisor_console"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD"})
SESSION_TTL = 12 * 3600.0
MAX_SESSIONS = 1024


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """One signed-in browser: what its token allowed, and its CSRF token."""

    access: Access
    csrf: str
    expires: float


class ConsoleSessions:
    """The listener's signed-in browsers, bounded in number and in time."""

    def __init__(
        self,
        *,
        ttl: float = SESSION_TTL,
        limit: int = MAX_SESSIONS,
        secure: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.limit = limit
        self.secure = secure
        self._clock = clock
        self._open: OrderedDict[str, ConsoleSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def open(self, access: Access) -> tuple[str, ConsoleSession]:
        """A new session: its cookie value and the session."""
        key = secrets.token_urlsafe(32)
        session = ConsoleSession(access, secrets.token_urlsafe(32), self._clock() + self.ttl)
        self._open[key] = session
        while len(self._open) > self.limit:
            self._open.popitem(last=False)
        return key, session

    def find(self, key: str) -> ConsoleSession | None:
        """The live session of cookie value `key`, or None (an expired one is dropped)."""
        session = self._open.get(key)
        if session is not None and session.expires <= self._clock():
            del self._open[key]
            return None
        return session

    def close(self, key: str) -> None:
        self._open.pop(key, None)

    def set_cookie(self, key: str) -> str:
        """The `Set-Cookie` value that signs a browser in."""
        secure = "; Secure" if self.secure else ""
        return f"{COOKIE}={key}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(self.ttl)}{secure}"

    def clear_cookie(self) -> str:
        secure = "; Secure" if self.secure else ""
        return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"


def header(scope: Scope, name: bytes) -> str | None:
    """One request header as text (latin-1, as HTTP has it), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def cookie_value(scope: Scope) -> str | None:
    """The console's session cookie of this request, if it sent one."""
    raw = header(scope, b"cookie")
    if raw is None:
        return None
    for part in raw.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value[:128]
    return None


def foreign_origin(scope: Scope) -> bool:
    """Whether the request's `Origin` names another site than this listener."""
    origin = header(scope, b"origin")
    if origin is None:
        return False  # not sent by a browser for this request: the CSRF header decides
    host = header(scope, b"host")
    scheme = "https" if scope.get("scheme") == "https" else "http"
    return host is None or origin != f"{scheme}://{host}"


def csrf_problem(scope: Scope, session: ConsoleSession) -> str | None:
    """Why a cookie-authenticated request may not run, or None if it may."""
    if scope["method"] in SAFE_METHODS:
        return None
    if foreign_origin(scope):
        return "the request comes from another origin"
    presented = header(scope, CSRF_HEADER.encode()) or ""
    if not hmac.compare_digest(presented.encode(), session.csrf.encode()):
        return f"a signed-in browser must send the {CSRF_HEADER} header (GET /console/session)"
    return None
