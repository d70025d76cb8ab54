"""Fixtures for the simulator tests: a running simulator and a plain aiohttp session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from placeos_sim import PlaceOSSimulator
from tests.sim.helpers import RawSocket, connect


@pytest.fixture(autouse=True)
async def no_lingering_tasks_or_timers() -> AsyncIterator[None]:
    """Fail a test that leaves tasks or timers on its loop (the HA plugin's own check looks at
    another loop for tests without `hass`). Autouse: torn down after the other fixtures."""
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


@pytest.fixture
async def sim(socket_enabled: None) -> AsyncIterator[PlaceOSSimulator]:
    """A started demo simulator with a normal key and an admin key."""
    simulator = PlaceOSSimulator(api_keys=("test-key",), admin_keys=("admin-key",))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def session(socket_enabled: None) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def sock(session: aiohttp.ClientSession, sim: PlaceOSSimulator) -> AsyncIterator[RawSocket]:
    """An open control socket with the normal key."""
    raw = await connect(session, sim)
    yield raw
    await raw.close()
