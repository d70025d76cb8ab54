"""Sensor states, attributes and per-binding updates."""

from __future__ import annotations

import json
from typing import Any

from homeassistant.const import ATTR_FRIENDLY_NAME, EVENT_STATE_CHANGED, STATE_UNKNOWN
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
import pytest

from custom_components.placeos.const import CONF_VALUE_DECODING
from custom_components.placeos.sensor import compact_json, state_from_value
from placeos_sim import PlaceOSSimulator

from .conftest import (
    ROOM,
    current,
    entity_id,
    make_entry,
    setup_entry,
    state_of,
    system_subentry,
    wait_until,
)

CUSTOM = "Custom_1.value"


async def _setup_custom(hass: HomeAssistant, sim: PlaceOSSimulator, **options: Any) -> str:
    """Bind a status that does not exist yet; return its entity id."""
    entry = make_entry(sim, [system_subentry(labels=[CUSTOM, "Display_1.power"])], options=options)
    assert await setup_entry(hass, entry)
    return entity_id(hass, CUSTOM)


async def _push(hass: HomeAssistant, sim: PlaceOSSimulator, eid: str, value: Any) -> Any:
    """Set the status in the simulator and wait until the sensor shows it."""
    sim.set_status(ROOM, "Custom", 1, "value", value)
    await wait_until(
        lambda: (state := hass.states.get(eid)) is not None and state.attributes["value"] == value
    )
    state = hass.states.get(eid)
    assert state is not None
    return state


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (42, "42"),
        (-1.5, "-1.5"),
        (0, "0"),
        (True, "true"),
        (False, "false"),
        ("hdmi", "hdmi"),
        ("", ""),
        ([1, "a", None], '[1,"a",null]'),
        ({"a": 1, "b": [True]}, '{"a":1,"b":[true]}'),
        ({"name": "Zoë"}, '{"name":"Zoë"}'),
        ("x" * 300, "x" * 255),
        (
            [{"id": n} for n in range(100)],
            json.dumps([{"id": n} for n in range(100)], separators=(",", ":"))[:255],
        ),
    ],
)
async def test_state_mapping(
    hass: HomeAssistant, sim: PlaceOSSimulator, value: Any, expected: str
) -> None:
    """Each value type is rendered as documented; the full value is in `value`."""
    eid = await _setup_custom(hass, sim)
    state = await _push(hass, sim, eid, value)
    assert state.state == expected
    assert state.attributes["value"] == value
    assert state.attributes["sys"] == ROOM
    assert state.attributes["mod"] == "Custom"
    assert state.attributes["index"] == 1
    assert state.attributes["name"] == "value"
    assert "state_class" not in state.attributes
    assert "unit_of_measurement" not in state.attributes


async def test_unknown_until_set_and_after_delete(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """A status that does not exist yet is unknown; deleted it is unknown again."""
    eid = await _setup_custom(hass, sim)
    state = hass.states.get(eid)
    assert state is not None
    assert state.state == STATE_UNKNOWN
    assert state.attributes["value"] is None
    await _push(hass, sim, eid, "on")
    sim.delete_status(ROOM, "Custom", 1, "value")
    await wait_until(lambda: current(hass, eid) == STATE_UNKNOWN)


async def test_type_changes_do_not_break_the_sensor(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """Number, then text, then a list, then a number again: no state class to violate."""
    eid = await _setup_custom(hass, sim)
    for value, expected in ((1, "1"), ("one", "one"), ([1], "[1]"), (2.5, "2.5")):
        state = await _push(hass, sim, eid, value)
        assert state.state == expected


async def test_huge_value(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """A value over 1 MB: the state is cut to 255 characters, the attribute holds it all."""
    eid = await _setup_custom(hass, sim)
    huge = [{"id": f"evt-{n}", "title": "x" * 100} for n in range(10_000)]
    assert len(json.dumps(huge)) > 1_000_000
    state = await _push(hass, sim, eid, huge)
    assert len(state.state) == 255
    assert state.state == json.dumps(huge, separators=(",", ":"))[:255]
    assert state.attributes["value"] == huge
    # The full value is not recorded: only the small attributes reach the database.
    assert state.state_info is not None
    assert "value" in state.state_info["unrecorded_attributes"]


async def test_notify_updates_exactly_one_entity(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """One notify writes one entity's state: no fan-out to the other sensors."""
    entry = make_entry(
        sim,
        [system_subentry(labels=["Display_1.power", "Display_1.volume", "Display_1.input"])],
    )
    assert await setup_entry(hass, entry)
    volume_id = entity_id(hass, "Display_1.volume")
    input_id = entity_id(hass, "Display_1.input")
    changed: list[str] = []

    @callback
    def on_change(event: Event[EventStateChangedData]) -> None:
        changed.append(event.data["entity_id"])

    unsub = hass.bus.async_listen(EVENT_STATE_CHANGED, on_change)
    sim.set_status(ROOM, "Display", 1, "volume", 31)
    await wait_until(lambda: volume_id in changed)
    # A second, later notify marks the point by which any fan-out would have shown.
    sim.set_status(ROOM, "Display", 1, "input", "dvi")
    await wait_until(lambda: input_id in changed)
    unsub()
    assert changed == [volume_id, input_id]


async def test_names_and_attributes(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """Entity names come from the device and the binding: "Boardroom Display 2 power"."""
    entry = make_entry(sim, [system_subentry(labels=["Display_2.power"])])
    assert await setup_entry(hass, entry)
    state = state_of(hass, "Display_2.power")
    assert state.attributes[ATTR_FRIENDLY_NAME] == "Boardroom Display 2 power"
    assert state.state == "false"
    assert state.attributes["index"] == 2


async def test_stringified_values_are_decoded(hass: HomeAssistant, socket_enabled: None) -> None:
    """Legacy servers send stringified JSON: `auto` decodes it, `raw` shows the text."""
    sim = PlaceOSSimulator(api_keys=("key-a",), value_encoding="string")
    await sim.start()
    try:
        entries = []
        for decoding, uid in (("auto", "authority-auto"), ("raw", "authority-raw")):
            entry = make_entry(
                sim,
                [system_subentry(labels=["Display_1.power", "Bookings_1.bookings"])],
                options={CONF_VALUE_DECODING: decoding},
                api_key="key-a",
                unique_id=uid,
            )
            assert await setup_entry(hass, entry)
            entries.append(entry)
        auto_power = hass.states.get(entity_id(hass, "Display_1.power", prefix="authority-auto"))
        raw_power = hass.states.get(entity_id(hass, "Display_1.power", prefix="authority-raw"))
        assert auto_power is not None
        assert raw_power is not None
        assert auto_power.state == "true"
        assert auto_power.attributes["value"] is True
        assert raw_power.state == "true"
        assert raw_power.attributes["value"] == "true"
        for entry in entries:
            assert await hass.config_entries.async_unload(entry.entry_id)
    finally:
        await sim.stop()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, "true"),
        (7, 7),
        (1.25, 1.25),
        (10**300, "1" + "0" * 254),
        ("é" * 300, "é" * 255),
        ({"k": "v"}, '{"k":"v"}'),
    ],
)
def test_state_from_value(value: Any, expected: Any) -> None:
    """The mapping function itself, including numbers too long for a state."""
    assert state_from_value(value) == expected


def test_compact_json_stops_early() -> None:
    """Cutting a long structure gives exactly the prefix of its full encoding."""
    value = {"items": list(range(100_000))}
    full = json.dumps(value, separators=(",", ":"))
    assert compact_json(value, 255) == full[:255]
    assert compact_json([], 255) == "[]"
