"""Fixtures for the simulator tests: a running simulator and a plain aiohttp session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from placeos_sim import PlaceOSSimulator
from tests.sim.helpers import RawSocket, connect


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
