"""The "system" subentry flow: add a system with its bindings, change the bindings.

Runs the real runtime against the PlaceOS simulator: a subentry flow needs a loaded entry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
import logging
from typing import Any

from homeassistant.config_entries import SOURCE_USER, ConfigEntryState, ConfigSubentry
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult, FlowResultType
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.placeos.client import PlaceOSApi
from custom_components.placeos.const import (
    CONF_BINDINGS,
    CONF_SYS,
    CONF_SYSTEM_NAME,
    SUBENTRY_TYPE_SYSTEM,
)
from placeos_sim import PlaceOSSimulator

from .conftest import API_KEY, ROOM, make_entry, system_subentry

ROOM_NAME = "Room 1.01 Boardroom"

# Every status of the boardroom in the demo scenario (two displays, one under a custom name).
BOARDROOM_STATUSES = {
    "Display_1.input",
    "Display_1.mute",
    "Display_1.power",
    "Display_1.volume",
    "Display_2.input",
    "Display_2.mute",
    "Display_2.power",
    "Display_2.volume",
    "Lighting_1.level",
    "Lighting_1.scene",
    "Bookings_1.bookings",
    "Bookings_1.in_use",
    "Occupancy_1.people_count",
    "Occupancy_1.presence",
    "_Admin_1.debug_mode",
    "_Admin_1.firmware",
}


@pytest.fixture
async def entry(hass: HomeAssistant, sim: PlaceOSSimulator) -> AsyncIterator[MockConfigEntry]:
    """A loaded entry without systems."""
    config_entry = make_entry(sim)
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    yield config_entry
    if config_entry.state is ConfigEntryState.LOADED:
        assert await hass.config_entries.async_unload(config_entry.entry_id)


async def _start(hass: HomeAssistant, entry: MockConfigEntry) -> FlowResult[Any, Any]:
    return await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_TYPE_SYSTEM), context={"source": SOURCE_USER}
    )


async def _configure(
    hass: HomeAssistant, result: FlowResult[Any, Any], user_input: dict[str, Any]
) -> FlowResult[Any, Any]:
    return await hass.config_entries.subentries.async_configure(result["flow_id"], user_input)


def _select_options(result: FlowResult[Any, Any], field: str) -> list[Any]:
    for marker, selector in result["data_schema"].schema.items():
        if marker == field:
            return list(selector.config["options"])
    raise AssertionError(f"{field} is not on the form")


def _suggested(result: FlowResult[Any, Any], field: str) -> Any:
    for marker in result["data_schema"].schema:
        if marker == field:
            return (marker.description or {}).get("suggested_value")
    raise AssertionError(f"{field} is not on the form")


async def _to_bindings(
    hass: HomeAssistant, entry: MockConfigEntry, sys_id: str = ROOM
) -> FlowResult[Any, Any]:
    result = await _start(hass, entry)
    result = await _configure(hass, result, {})
    assert result["step_id"] == "pick_system"
    result = await _configure(hass, result, {"system": sys_id})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "bindings"
    return result


def _only_subentry(entry: MockConfigEntry) -> ConfigSubentry:
    (subentry,) = entry.subentries.values()
    return subentry


# -------------------------------------------------------------------------------------- create


async def test_add_system_with_bindings(
    hass: HomeAssistant, entry: MockConfigEntry, sim: PlaceOSSimulator
) -> None:
    """Search (empty), pick, choose offered and free-text statuses: one subentry, live."""
    result = await _start(hass, entry)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"

    result = await _configure(hass, result, {})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "pick_system"
    assert result["description_placeholders"] == {"count": "3"}
    assert {"value": ROOM, "label": f"{ROOM_NAME} ({ROOM})"} in _select_options(result, "system")

    result = await _configure(hass, result, {"system": ROOM})
    assert result["step_id"] == "bindings"
    assert set(_select_options(result, CONF_BINDINGS)) == BOARDROOM_STATUSES
    assert result["description_placeholders"]["system"] == ROOM_NAME
    assert result["description_placeholders"]["sys"] == ROOM

    result = await _configure(
        hass,
        result,
        {
            CONF_BINDINGS: [
                "Display_2.power",
                " Camera_3.zoom ",
                "Display_1.volume",
                "Display_2.power",
            ]
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()

    subentry = _only_subentry(entry)
    assert subentry.subentry_type == SUBENTRY_TYPE_SYSTEM
    assert subentry.title == ROOM_NAME
    assert subentry.unique_id == ROOM
    assert dict(subentry.data) == {
        CONF_SYS: ROOM,
        CONF_SYSTEM_NAME: ROOM_NAME,
        CONF_BINDINGS: [
            {"mod": "Display", "index": 2, "name": "power"},
            {"mod": "Camera", "index": 3, "name": "zoom"},
            {"mod": "Display", "index": 1, "name": "volume"},
        ],
    }
    # The runtime picks the new system up without a restart: one entity per binding.
    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    assert len(entities) == 3
    assert entry.state is ConfigEntryState.LOADED


async def test_search_narrows_systems(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """The search text goes to PlaceOS; no match re-shows the search with an error."""
    result = await _start(hass, entry)
    result = await _configure(hass, result, {"search": "  zzz  "})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {"base": "no_systems"}
    assert _suggested(result, "search") == "zzz"

    result = await _configure(hass, result, {"search": "huddle"})
    assert result["step_id"] == "pick_system"
    assert _select_options(result, "system") == [
        {"value": "sys-room102", "label": "Room 1.02 Huddle (sys-room102)"}
    ]
    assert result["description_placeholders"] == {"count": "1"}


async def test_bindings_validation(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Free text must read Module_index.status; at least one binding is needed."""
    result = await _to_bindings(hass, entry)

    result = await _configure(hass, result, {CONF_BINDINGS: ["Display_1.power", "Display_1"]})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_BINDINGS: "invalid_binding"}
    assert result["description_placeholders"]["binding"] == "Display_1"
    # The user's choice stays selected, the bad entry included so it can be fixed.
    assert _suggested(result, CONF_BINDINGS) == ["Display_1.power", "Display_1"]
    assert "Display_1" in _select_options(result, CONF_BINDINGS)

    result = await _configure(hass, result, {CONF_BINDINGS: []})
    assert result["errors"] == {CONF_BINDINGS: "no_bindings"}

    result = await _configure(hass, result, {})
    assert result["errors"] == {CONF_BINDINGS: "no_bindings"}

    result = await _configure(hass, result, {CONF_BINDINGS: ["Lighting.level"]})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert _only_subentry(entry).data[CONF_BINDINGS] == [
        {"mod": "Lighting", "index": 1, "name": "level"}
    ]


async def test_same_system_twice_aborts(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """A system can be added to an entry once."""
    result = await _to_bindings(hass, entry)
    result = await _configure(hass, result, {CONF_BINDINGS: ["Display_1.power"]})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()

    result = await _start(hass, entry)
    result = await _configure(hass, result, {})
    result = await _configure(hass, result, {"system": ROOM})

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert len(entry.subentries) == 1


# --------------------------------------------------------------------------------- reconfigure


async def test_reconfigure_bindings(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """Pre-filled with the current bindings, including one PlaceOS no longer reports."""
    entry = make_entry(
        sim,
        [
            system_subentry(
                ROOM, "Boardroom (old name)", ["Display_1.power", "Projector_1.lamp_hours"]
            )
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    subentry = _only_subentry(entry)

    result = await entry.start_subentry_reconfigure_flow(hass, subentry.subentry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "bindings"
    assert _suggested(result, CONF_BINDINGS) == ["Display_1.power", "Projector_1.lamp_hours"]
    assert set(_select_options(result, CONF_BINDINGS)) == {
        *BOARDROOM_STATUSES,
        "Projector_1.lamp_hours",
    }

    result = await _configure(
        hass, result, {CONF_BINDINGS: ["Projector_1.lamp_hours", "Occupancy_1.presence"]}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()

    subentry = _only_subentry(entry)
    assert subentry.title == "Boardroom (old name)"
    assert dict(subentry.data) == {
        CONF_SYS: ROOM,
        CONF_SYSTEM_NAME: ROOM_NAME,
        CONF_BINDINGS: [
            {"mod": "Projector", "index": 1, "name": "lamp_hours"},
            {"mod": "Occupancy", "index": 1, "name": "presence"},
        ],
    }
    # Applied live: the runtime did not need a reload to drop Display_1.power.
    assert entry.state is ConfigEntryState.LOADED
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_reconfigure_system_gone(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """A system deleted in PlaceOS cannot be reconfigured; the reason says so."""
    entry = make_entry(sim, [system_subentry("sys-room103", "Room 1.03")])
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    sim.scenario.systems = [s for s in sim.scenario.systems if s.id != "sys-room103"]

    result = await entry.start_subentry_reconfigure_flow(hass, _only_subentry(entry).subentry_id)

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "system_not_found"
    assert await hass.config_entries.async_unload(entry.entry_id)


# ------------------------------------------------------------------------------------ failures


async def test_entry_not_loaded(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """Neither adding nor changing a system works while the entry is not loaded."""
    entry = make_entry(sim, [system_subentry()])
    entry.add_to_hass(hass)

    result = await _start(hass, entry)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"

    result = await entry.start_subentry_reconfigure_flow(hass, _only_subentry(entry).subentry_id)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"


async def test_instance_unreachable(
    hass: HomeAssistant, entry: MockConfigEntry, sim: PlaceOSSimulator
) -> None:
    """The instance went away after setup: the flow ends with cannot_connect."""
    result = await _start(hass, entry)
    await sim.stop()

    result = await _configure(hass, result, {})

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "cannot_connect"


async def test_key_revoked(
    hass: HomeAssistant, entry: MockConfigEntry, sim: PlaceOSSimulator
) -> None:
    """The key was revoked after setup (open sockets stay open): the flow says so."""
    result = await _start(hass, entry)
    sim.revoke_key(API_KEY)

    result = await _configure(hass, result, {})

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "invalid_auth"


async def test_unexpected_error(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug while reading module state aborts with `unknown` and logs the traceback."""

    async def broken(self: PlaceOSApi, sys_id: str, mod: str, index: int) -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(PlaceOSApi, "module_state", broken)
    result = await _start(hass, entry)
    result = await _configure(hass, result, {})
    result = await _configure(hass, result, {"system": ROOM})

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unknown"
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert API_KEY not in caplog.text
    assert not entry.subentries
