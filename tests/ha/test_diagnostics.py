"""Diagnostics download: connection, hub, systems and values, with the key redacted."""

from __future__ import annotations

import json
from typing import Any

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.placeos.const import CONF_UNAVAILABLE_GRACE
from custom_components.placeos.diagnostics import async_get_config_entry_diagnostics
from placeos_sim import PlaceOSSimulator

from .conftest import (
    API_KEY,
    ROOM,
    make_entry,
    setup_entry,
    state_of,
    system_subentry,
    wait_until,
)


async def test_diagnostics_redact_the_key(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, sim: PlaceOSSimulator
) -> None:
    """Everything useful is there; the API key appears nowhere in the download."""
    entry = make_entry(
        sim,
        [system_subentry(labels=["Display_1.power", "Bookings_1.bookings", "Custom_1.value"])],
        options={CONF_UNAVAILABLE_GRACE: 5},
    )
    assert await setup_entry(hass, entry)
    huge = "y" * 5000 + API_KEY  # even a value holding the key is scrubbed
    sim.set_status(ROOM, "Custom", 1, "value", huge)
    await wait_until(lambda: state_of(hass, "Custom_1.value").attributes["value"] == huge)

    diagnostics: dict[str, Any] = dict(
        await get_diagnostics_for_config_entry(hass, hass_client, entry)
    )

    dump = json.dumps(diagnostics)
    assert API_KEY not in dump
    assert diagnostics["entry"]["data"]["api_key"] == "**REDACTED**"
    assert diagnostics["entry"]["data"]["url"] == sim.url
    assert diagnostics["entry"]["options"] == {CONF_UNAVAILABLE_GRACE: 5}
    assert diagnostics["client"]["state"] == "connected"
    assert diagnostics["client"]["bindings"] == 3
    assert diagnostics["hub"]["available"] is True
    assert diagnostics["hub"]["grace_period"] == 5
    assert diagnostics["subentries"][0]["data"]["sys"] == ROOM
    system = diagnostics["systems"][0]
    assert system["sys"] == ROOM
    bindings = {b["binding"]: b for b in system["bindings"]}
    assert bindings["Display_1.power"]["value"] == "true"
    assert bindings["Display_1.power"]["has_value"] is True
    assert bindings["Bookings_1.bookings"]["value"].startswith('[{"id":"evt-1"')
    assert len(bindings["Custom_1.value"]["value"]) == 1000


async def test_diagnostics_of_an_entry_that_is_not_loaded(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """Diagnostics of a stopped entry show its configuration only."""
    entry = make_entry(sim, [system_subentry()])
    assert await setup_entry(hass, entry)
    assert await hass.config_entries.async_unload(entry.entry_id)
    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    assert "client" not in diagnostics
    assert diagnostics["entry"]["state"] == "not_loaded"
    assert API_KEY not in json.dumps(diagnostics)
