"""Suite-wide settings."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

# These machines are shared and noisy: properties are what we test, not generation speed.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that restart the Docker engine run last: the rest of the suite needs it up."""
    items.sort(key=lambda item: item.get_closest_marker("engine_restart") is not None)
