"""Shared fixtures.

The project's `custom_components` package is imported before the `hass` fixture starts: the test
harness puts its own `custom_components` directory first on `sys.path`, and HA would otherwise
report "Integration not found" for `placeos`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import custom_components.placeos  # noqa: F401  (must be imported before hass starts)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(request: pytest.FixtureRequest) -> None:
    """Enable the project's integration in every test that runs Home Assistant."""
    if "hass" in request.fixturenames:
        request.getfixturevalue("enable_custom_integrations")


@pytest.fixture(autouse=True)
async def no_lingering_tasks_or_timers(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail a plain-asyncio test that leaves tasks or timers on its loop.

    The harness's own check covers tests that run `hass` only; it looks at another loop for the
    rest. Autouse, so it is torn down after the test's other fixtures.
    """
    if "hass" in request.fixturenames:
        yield
        return
    loop = asyncio.get_running_loop()
    before = asyncio.all_tasks()
    yield
    for _ in range(3):
        await asyncio.sleep(0)  # let just-cancelled tasks finish
    current = asyncio.current_task()
    lingering = {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}
    assert not lingering, f"lingering tasks: {lingering}"
    timers = [h for h in getattr(loop, "_scheduled", []) if not h.cancelled()]
    assert not timers, f"lingering timers: {timers}"
