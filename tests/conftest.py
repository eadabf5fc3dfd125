"""Suite-wide settings."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# These machines are shared and noisy: properties are what we test, not generation speed.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")
