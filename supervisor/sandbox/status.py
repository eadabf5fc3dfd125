"""The status machines of environments and sandboxes (pure: no I/O, no trio)."""

from __future__ import annotations

import enum


class EnvironmentStatus(enum.StrEnum):
    CREATED = "CREATED"
    ONLINE = "ONLINE"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    OFFLINE = "OFFLINE"
    # Between two environments, after a failed start (sandbox.keeper): never an
    # Environment's own status, so not in ENVIRONMENT_TRANSITIONS. MISCONFIGURED: the
    # start cannot work with these settings on this host (bwrap missing, say).
    BACKOFF = "BACKOFF"
    FATAL = "FATAL"
    MISCONFIGURED = "MISCONFIGURED"


class SandboxStatus(enum.StrEnum):
    CREATED = "CREATED"
    SETTING_UP = "SETTING_UP"
    READY = "READY"
    ACQUIRED = "ACQUIRED"
    IN_SESSION = "IN_SESSION"
    EXITING_SESSION = "EXITING_SESSION"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    OFFLINE = "OFFLINE"


S = SandboxStatus

#: Every legal sandbox transition. SHUTTING_DOWN and OFFLINE lead nowhere but OFFLINE:
#: a sandbox that began shutting down never comes back (rule 10).
SANDBOX_TRANSITIONS: dict[SandboxStatus, frozenset[SandboxStatus]] = {
    S.CREATED: frozenset({S.SETTING_UP, S.SHUTTING_DOWN}),
    S.SETTING_UP: frozenset({S.READY, S.IN_SESSION, S.SHUTTING_DOWN}),
    S.READY: frozenset({S.ACQUIRED, S.SHUTTING_DOWN}),
    S.ACQUIRED: frozenset({S.READY, S.SETTING_UP, S.SHUTTING_DOWN}),
    S.IN_SESSION: frozenset({S.EXITING_SESSION, S.SHUTTING_DOWN}),
    S.EXITING_SESSION: frozenset({S.READY, S.SETTING_UP, S.SHUTTING_DOWN}),
    S.SHUTTING_DOWN: frozenset({S.OFFLINE}),
    S.OFFLINE: frozenset(),
}

E = EnvironmentStatus

#: Every legal environment transition: start is one-shot, and a failed start still ends
#: OFFLINE (through SHUTTING_DOWN).
ENVIRONMENT_TRANSITIONS: dict[EnvironmentStatus, frozenset[EnvironmentStatus]] = {
    E.CREATED: frozenset({E.ONLINE, E.SHUTTING_DOWN}),
    E.ONLINE: frozenset({E.SHUTTING_DOWN}),
    E.SHUTTING_DOWN: frozenset({E.OFFLINE}),
    E.OFFLINE: frozenset(),
}
