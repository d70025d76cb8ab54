"""Fixtures of the HA-level tests: a real simulator on loopback and entries set up through HA.

No client mocks: the integration talks to `placeos_sim` over a real socket. The client's timing
parameters are made tiny by replacing `hub.CLIENT_TIMINGS` (a constant read whenever a client is
created), so reconnects take milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from homeassistant.config_entries import ConfigEntry, ConfigEntryState, ConfigSubentryData
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, State
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.placeos import hub as hub_module
from custom_components.placeos.client import ConnectionState
from custom_components.placeos.const import (
    CONF_API_KEY,
    CONF_BINDINGS,
    CONF_SYS,
    CONF_SYSTEM_NAME,
    CONF_URL,
    CONF_VERIFY_SSL,
    DOMAIN,
    SUBENTRY_TYPE_SYSTEM,
)
from custom_components.placeos.hub import ClientTimings, PlaceOSHub
from placeos_sim import PlaceOSSimulator

# Distinctive, so a leak into logs or diagnostics is easy to detect.
API_KEY = "key-id-4242.s3cr3t-Xq9Lr2Vw8Zt5"
ADMIN_KEY = "key-id-9999.adm1n-Pk3Jh7Ys1Wd6"
AUTHORITY_ID = "authority-demo0001"
ROOM = "sys-room101"
HUDDLE = "sys-room102"
LOBBY = "sys-lobby1"

FAST_TIMINGS = ClientTimings(
    setup_timeout=5.0,
    request_timeout=2.0,
    ping_interval=1.0,
    dead_after=5.0,
    backoff_min=0.01,
    backoff_max=0.03,
    close_timeout=2.0,
)


@pytest.fixture(autouse=True)
def fast_client_timings(monkeypatch: pytest.MonkeyPatch) -> ClientTimings:
    """Millisecond backoff so outages and recoveries are quick."""
    monkeypatch.setattr(hub_module, "CLIENT_TIMINGS", FAST_TIMINGS)
    return FAST_TIMINGS


@pytest.fixture
async def sim(socket_enabled: None) -> AsyncIterator[PlaceOSSimulator]:
    """The demo building on 127.0.0.1, with a normal and an admin key."""
    simulator = PlaceOSSimulator(api_keys=(API_KEY,), admin_keys=(ADMIN_KEY,))
    await simulator.start()
    yield simulator
    await simulator.stop()


def binding(label: str) -> dict[str, Any]:
    """`Display_2.power` -> the subentry's binding item."""
    module, _, name = label.partition(".")
    mod, _, index = module.rpartition("_")
    return {"mod": mod, "index": int(index), "name": name}


def system_subentry(
    sys: str = ROOM, name: str = "Boardroom", labels: Iterable[str] = ("Display_1.power",)
) -> ConfigSubentryData:
    """A "system" subentry as the subentry flow creates it."""
    return ConfigSubentryData(
        data={
            CONF_SYS: sys,
            CONF_SYSTEM_NAME: name,
            CONF_BINDINGS: [binding(label) for label in labels],
        },
        subentry_type=SUBENTRY_TYPE_SYSTEM,
        title=name,
        unique_id=sys,
    )


def make_entry(
    sim: PlaceOSSimulator,
    subentries: Iterable[ConfigSubentryData] = (),
    *,
    options: Mapping[str, Any] | None = None,
    api_key: str = API_KEY,
    verify_ssl: bool = True,
    unique_id: str = AUTHORITY_ID,
    title: str = "Demo Building",
) -> MockConfigEntry:
    """A config entry for the simulator (not yet added to HA)."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=title,
        unique_id=unique_id,
        data={CONF_URL: sim.url, CONF_API_KEY: api_key, CONF_VERIFY_SSL: verify_ssl},
        options=dict(options or {}),
        subentries_data=list(subentries),
    )


async def setup_entry(hass: HomeAssistant, entry: MockConfigEntry) -> bool:
    """Add the entry to HA and set it up; return HA's verdict."""
    entry.add_to_hass(hass)
    result = await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return result


def hub_of(entry: ConfigEntry) -> PlaceOSHub:
    """The running hub of a loaded entry."""
    assert entry.state is ConfigEntryState.LOADED
    hub: PlaceOSHub = entry.runtime_data
    return hub


def entity_id(hass: HomeAssistant, label: str, sys: str = ROOM, prefix: str = AUTHORITY_ID) -> str:
    """The entity id of a binding, found by its unique id in the entity registry."""
    module, _, name = label.partition(".")
    mod, _, index = module.rpartition("_")
    unique_id = f"{prefix}_{sys}_{mod}_{index}_{name}"
    found = er.async_get(hass).async_get_entity_id(Platform.SENSOR, DOMAIN, unique_id)
    assert found is not None, f"no entity for {unique_id}"
    return found


def state_of(hass: HomeAssistant, label: str, sys: str = ROOM) -> State:
    """The current state of a binding's sensor."""
    state = hass.states.get(entity_id(hass, label, sys))
    assert state is not None
    return state


def current(hass: HomeAssistant, entity: str) -> str:
    """The state string of an entity that must exist."""
    state = hass.states.get(entity)
    assert state is not None, f"{entity} does not exist"
    return state.state


async def restart(sim: PlaceOSSimulator) -> None:
    """Start a stopped simulator again on its port (clients reconnect to the same URL)."""
    assert sim.port is not None
    await sim.start(port=sim.port)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Let the loop run (real sockets) until `predicate()` holds."""
    async with asyncio.timeout(timeout):
        # Polling: the condition spans sockets, the client and HA's state machine, with no
        # single event to wait on.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


def record_states(hub: PlaceOSHub) -> list[ConnectionState]:
    """Collect the client's state transitions from now on (its public listener API)."""
    states: list[ConnectionState] = []
    hub.entry.async_on_unload(
        hub.client.add_state_listener(lambda state, _error: states.append(state))
    )
    return states
