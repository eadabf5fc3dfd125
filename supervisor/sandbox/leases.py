"""An environment's sessions: opening one on an acquired sandbox, closing it, expiring it.

Session leases are watched by one sleeping task per session, so an expired session is
ended at its deadline rather than up to an interval later (rule 19). Expiry shuts the
sandbox down. The pool keeps the table of sessions in progress; every way a session ends
takes it out.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

import structlog
import trio

from supervisor.errors import SandboxStateError, SessionTeardownError
from supervisor.sandbox.session import Session, new_session_id

if TYPE_CHECKING:
    from supervisor.config.environment import EnvironmentConfig
    from supervisor.sandbox.pool import Pool
    from supervisor.sandbox.sandbox import Sandbox

log = structlog.get_logger("supervisor.environment")


class Leasing(Protocol):
    """The environment, as its sessions see it (`environment.Environment`)."""

    @property
    def name(self) -> str: ...
    @property
    def settings(self) -> EnvironmentConfig: ...
    @property
    def pool(self) -> Pool: ...
    @property
    def nursery(self) -> trio.Nursery: ...
    async def acquire(self, *, timeout: float | None = None) -> Sandbox: ...


async def open_session(
    env: Leasing,
    *,
    ttl: float | None,
    lease: float | None,
    labels: Mapping[str, str] | None,
    hint: str | None,
    timeout: float | None,
) -> Session:
    """`Environment.open_session`: acquire a sandbox, start a session, watch its lease."""
    started = trio.current_time()
    sandbox = await env.acquire(timeout=timeout)
    session = Session(
        new_session_id(hint or env.name),
        sandbox,
        environment=env.name,
        ttl=env.settings.session_ttl if ttl is None else ttl,
        lease=lease,
        labels=labels,
    )
    session.acquire_wait = trio.current_time() - started
    env.pool.session_started(session)
    try:
        await sandbox.start_session(session)
    except BaseException:
        env.pool.session_over(session)
        raise
    env.nursery.start_soon(_watch_lease, env, session)
    return session


async def close_session(env: Leasing, session: Session) -> None:
    """`Environment.close_session`: end `session`, give its sandbox back; idempotent."""
    try:
        await session.sandbox.end_session()
    finally:
        env.pool.session_over(session)


@asynccontextmanager
async def session(
    env: Leasing,
    *,
    ttl: float | None,
    lease: float | None,
    labels: Mapping[str, str] | None,
    timeout: float | None,
) -> AsyncIterator[Session]:
    """`Environment.session`: a session closed (shielded) when the block exits."""
    opened = await open_session(
        env, ttl=ttl, lease=lease, labels=labels, hint=None, timeout=timeout
    )
    try:
        yield opened
    except SandboxStateError as exc:
        opened.sandbox.record(exc)  # rule 6: not reused after this session
        raise
    finally:
        with trio.CancelScope(shield=True):
            await close_session(env, opened)


async def _watch_lease(env: Leasing, session: Session) -> None:
    try:
        while not session.ended:
            with trio.move_on_at(session.deadline):
                await session.changed.wait()  # ended, or a command finished
            if session.ended:
                return
            if trio.current_time() >= session.deadline:
                await expire(env, session)
                return
    finally:
        # However it ended (released, expired, its sandbox condemned by housekeeping).
        env.pool.session_over(session)


async def expire(env: Leasing, session: Session) -> None:
    """`Environment.expire`: end a session whose TTL or lease ran out (rule 19)."""
    if session.ended:
        return
    env.pool.count_expired()
    log.info("session_expired", environment=env.name, session=session.id)
    try:
        with contextlib.suppress(SessionTeardownError):
            await session.sandbox.end_session(expired=True)
    finally:
        env.pool.session_over(session)
