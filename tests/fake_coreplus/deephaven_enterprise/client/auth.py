"""Fake of `deephaven_enterprise.client.auth`: the exception the helper maps."""


class AuthenticationFailedException(Exception):
    """The server rejected a password or key (as in the real client)."""
