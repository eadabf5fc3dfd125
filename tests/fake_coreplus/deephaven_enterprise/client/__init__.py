"""Fake of `deephaven_enterprise.client` (deephaven-coreplus-client)."""
