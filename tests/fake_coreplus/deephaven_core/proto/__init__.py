"""Fake of `deephaven_core.proto`: only what the helper's liveness call builds."""
