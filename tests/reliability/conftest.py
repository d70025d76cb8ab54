"""Fixtures of the fault campaign: the simulator on loopback and the campaign's client timings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from custom_components.placeos import hub as hub_module
from custom_components.placeos.hub import ClientTimings
from placeos_sim import PlaceOSSimulator

from .campaign import CAMPAIGN_TIMINGS, FIRST_KEY


@pytest.fixture(autouse=True)
def campaign_timings(monkeypatch: pytest.MonkeyPatch) -> ClientTimings:
    """Tiny client timings: a dead socket is noticed in 1.2 s, a reconnect takes milliseconds."""
    monkeypatch.setattr(hub_module, "CLIENT_TIMINGS", CAMPAIGN_TIMINGS)
    return CAMPAIGN_TIMINGS


@pytest.fixture
async def sim(socket_enabled: None) -> AsyncIterator[PlaceOSSimulator]:
    """The demo building on 127.0.0.1 with the campaign's first key."""
    simulator = PlaceOSSimulator(api_keys=(FIRST_KEY,))
    await simulator.start()
    yield simulator
    await simulator.stop()
