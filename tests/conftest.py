"""Shared fixtures.

The project's `custom_components` package is imported before the `hass` fixture starts: the test
harness puts its own `custom_components` directory first on `sys.path`, and HA would otherwise
report "Integration not found" for `placeos`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import custom_components.placeos  # noqa: F401  (must be imported before hass starts)
from placeos_sim import PlaceOSSimulator

API_KEY = "test-key.s3cr3t-value-never-logged"


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(request: pytest.FixtureRequest) -> None:
    """Enable the project's integration in every test that runs Home Assistant."""
    if "hass" in request.fixturenames:
        request.getfixturevalue("enable_custom_integrations")


@pytest.fixture
async def sim(socket_enabled: Any) -> AsyncIterator[PlaceOSSimulator]:
    """A running simulator of the demo building on a free loopback port."""
    simulator = PlaceOSSimulator(api_keys=(API_KEY,))
    await simulator.start(host="127.0.0.1", port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()
