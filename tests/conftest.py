"""Shared fixtures.

The project's `custom_components` package is imported before the `hass` fixture starts: the test
harness puts its own `custom_components` directory first on `sys.path`, and HA would otherwise
report "Integration not found" for `placeos`.
"""

from __future__ import annotations

import pytest

import custom_components.placeos  # noqa: F401  (must be imported before hass starts)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(request: pytest.FixtureRequest) -> None:
    """Enable the project's integration in every test that runs Home Assistant."""
    if "hass" in request.fixturenames:
        request.getfixturevalue("enable_custom_integrations")
