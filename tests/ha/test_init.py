"""Setup, unload, reload, connection loss and recovery, reauth and live subentry changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
import logging
from types import MappingProxyType

from homeassistant.config_entries import (
    SOURCE_REAUTH,
    ConfigEntryState,
    ConfigSubentry,
)
from homeassistant.const import EVENT_STATE_CHANGED, STATE_UNAVAILABLE, STATE_UNKNOWN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from custom_components.placeos import hub as hub_module
from custom_components.placeos.client import ConnectionState
from custom_components.placeos.const import (
    CONF_BINDINGS,
    CONF_EXEC_TIMEOUT,
    CONF_SYS,
    CONF_SYSTEM_NAME,
    CONF_UNAVAILABLE_GRACE,
    DOMAIN,
    SUBENTRY_TYPE_SYSTEM,
)
from custom_components.placeos.hub import ClientTimings
from placeos_sim import PlaceOSSimulator

from .conftest import (
    API_KEY,
    AUTHORITY_ID,
    HUDDLE,
    LOBBY,
    ROOM,
    binding,
    current,
    entity_id,
    hub_of,
    make_entry,
    record_states,
    restart,
    setup_entry,
    state_of,
    system_subentry,
    wait_until,
)

ROOM_LABELS = ("Display_1.power", "Display_1.volume", "Display_1.input")


def _reauth_flows(hass: HomeAssistant) -> list[dict[str, object]]:
    return [
        flow
        for flow in hass.config_entries.flow.async_progress_by_handler(DOMAIN)
        if flow["context"].get("source") == SOURCE_REAUTH
    ]


def _device(hass: HomeAssistant, sys: str, prefix: str = AUTHORITY_ID) -> dr.DeviceEntry | None:
    return dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{prefix}_{sys}")})


async def test_setup_creates_device_and_entities(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """One socket, one device per subentry, one live sensor per binding."""
    entry = make_entry(
        sim,
        [
            system_subentry(labels=ROOM_LABELS),
            system_subentry(HUDDLE, "Huddle", ["Display_1.input"]),
        ],
    )
    assert await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.LOADED
    assert sim.connections == 1
    assert sim.total_connections == 1
    assert sim.bind_requests == 4

    assert state_of(hass, "Display_1.power").state == "true"
    assert state_of(hass, "Display_1.volume").state == "30"
    assert state_of(hass, "Display_1.input", HUDDLE).state == "usb"

    device = _device(hass, ROOM)
    assert device is not None
    assert device.name == "Boardroom"
    assert device.manufacturer == "PlaceOS"
    assert device.model == "System"
    assert device.serial_number == ROOM
    assert device.configuration_url == f"{sim.url}/backoffice/#/systems/{ROOM}"
    assert device.via_device_id is None
    room_subentry_id = next(
        sid for sid, sub in entry.subentries.items() if sub.data[CONF_SYS] == ROOM
    )
    assert device.config_entries_subentries == {entry.entry_id: {room_subentry_id}}
    registry_entry = er.async_get(hass).async_get(entity_id(hass, "Display_1.power"))
    assert registry_entry is not None
    assert registry_entry.device_id == device.id
    assert registry_entry.config_subentry_id == room_subentry_id
    assert registry_entry.unique_id == f"{AUTHORITY_ID}_{ROOM}_Display_1_power"


async def test_setup_without_subentries(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """An entry without systems connects and binds nothing."""
    entry = make_entry(sim)
    assert await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.LOADED
    assert sim.bind_requests == 0
    assert hass.states.async_entity_ids("sensor") == []


async def test_setup_retries_when_instance_is_down(
    hass: HomeAssistant, sim: PlaceOSSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connection refused until the setup timeout: not ready (translated), client closed."""
    monkeypatch.setattr(
        hub_module, "CLIENT_TIMINGS", replace(hub_module.CLIENT_TIMINGS, setup_timeout=0.2)
    )
    entry = make_entry(sim, [system_subentry()])
    await sim.stop()
    assert not await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert entry.error_reason_translation_key == "cannot_connect"
    assert "127.0.0.1" in (entry.reason or "")
    assert API_KEY not in (entry.reason or "")


async def test_setup_retries_when_binds_never_complete(
    hass: HomeAssistant, sim: PlaceOSSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket opens but the server stays silent: setup times out, the socket is closed."""
    monkeypatch.setattr(
        hub_module,
        "CLIENT_TIMINGS",
        replace(hub_module.CLIENT_TIMINGS, setup_timeout=0.2, request_timeout=5.0),
    )
    sim.silent = True
    entry = make_entry(sim, [system_subentry()])
    assert not await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert entry.error_reason_translation_key == "cannot_connect"
    await sim.wait_for(lambda: sim.connections == 0)
    assert sim.total_connections == 1


@pytest.mark.parametrize(("status", "key"), [(401, "auth_failed"), (403, "forbidden")])
async def test_setup_auth_failed_starts_reauth(
    hass: HomeAssistant, sim: PlaceOSSimulator, status: int, key: str
) -> None:
    """A rejected key at setup: auth failed (translated) and a reauth flow."""
    sim.reject_next_handshakes(1, status)
    entry = make_entry(sim, [system_subentry()])
    assert not await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.error_reason_translation_key == key
    assert len(_reauth_flows(hass)) == 1
    assert sim.connections == 0


async def test_unload_and_reload(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """Unload closes the socket; reload opens exactly one new one."""
    entry = make_entry(sim, [system_subentry(labels=ROOM_LABELS)])
    assert await setup_entry(hass, entry)

    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    await sim.wait_for(lambda: sim.connections == 1)
    assert sim.total_connections == 2
    assert state_of(hass, "Display_1.power").state == "true"

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED
    await sim.wait_for(lambda: sim.connections == 0)
    assert state_of(hass, "Display_1.power").state == STATE_UNAVAILABLE


async def test_two_entries_each_have_their_own_socket(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """Two instances: two entries, two sockets, values kept apart."""
    other = PlaceOSSimulator(api_keys=(API_KEY,))
    await other.start()
    try:
        other.set_status(ROOM, "Display", 1, "input", "dvi")
        first = make_entry(sim, [system_subentry(labels=["Display_1.input"])])
        second = make_entry(
            other,
            [system_subentry(labels=["Display_1.input"])],
            unique_id="authority-other",
            title="Other",
        )
        assert await setup_entry(hass, first)
        assert await setup_entry(hass, second)
        assert (sim.connections, other.connections) == (1, 1)

        first_id = entity_id(hass, "Display_1.input")
        second_id = entity_id(hass, "Display_1.input", prefix="authority-other")
        assert current(hass, first_id) == "hdmi"
        assert current(hass, second_id) == "dvi"

        other.set_status(ROOM, "Display", 1, "input", "hdmi3")
        await wait_until(lambda: current(hass, second_id) == "hdmi3")
        assert current(hass, first_id) == "hdmi"

        assert await hass.config_entries.async_unload(second.entry_id)
        await other.wait_for(lambda: other.connections == 0)
        assert sim.connections == 1
    finally:
        await other.stop()


async def test_outage_and_recovery_resync_values(
    hass: HomeAssistant, sim: PlaceOSSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Down: unavailable, one INFO line. Up: fresh values, one INFO line, nothing louder."""
    caplog.set_level(logging.INFO, logger="custom_components.placeos")
    entry = make_entry(sim, [system_subentry(labels=ROOM_LABELS)])
    assert await setup_entry(hass, entry)
    states = record_states(hub_of(entry))
    power_id = entity_id(hass, "Display_1.power")

    await sim.stop()
    await wait_until(lambda: current(hass, power_id) == STATE_UNAVAILABLE)
    # Several failed attempts while down must not add log lines.
    await wait_until(lambda: states.count(ConnectionState.CONNECTING) >= 3)

    # Changed and deleted while down: the server does not replay these.
    sim.set_status(ROOM, "Display", 1, "volume", 55)
    sim.delete_status(ROOM, "Display", 1, "input")
    await restart(sim)

    await wait_until(lambda: current(hass, power_id) != STATE_UNAVAILABLE)
    assert state_of(hass, "Display_1.power").state == "true"
    assert state_of(hass, "Display_1.volume").state == "55"
    assert state_of(hass, "Display_1.input").state == STATE_UNKNOWN

    records = [r for r in caplog.records if r.name.startswith("custom_components.placeos")]
    ours = [r for r in records if r.name == "custom_components.placeos.hub"]
    assert [r.levelno for r in ours] == [logging.INFO, logging.INFO]
    assert "lost" in ours[0].getMessage()
    assert "restored" in ours[1].getMessage()
    assert all(r.levelno < logging.WARNING for r in records)
    assert API_KEY not in caplog.text


async def test_grace_period_keeps_entities_available(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """With a grace period, a short outage is invisible; a long one makes entities unavailable."""
    entry = make_entry(
        sim, [system_subentry(labels=ROOM_LABELS)], options={CONF_UNAVAILABLE_GRACE: 60}
    )
    assert await setup_entry(hass, entry)
    hub = hub_of(entry)
    states = record_states(hub)
    power_id = entity_id(hass, "Display_1.power")

    seen: list[str] = []
    hass.bus.async_listen(
        EVENT_STATE_CHANGED,
        lambda event: (
            seen.append(event.data["new_state"].state)
            if event.data["entity_id"] == power_id
            else None
        ),
    )

    # Short outage: never unavailable; the status deleted meanwhile is unknown after the resync.
    await sim.stop()
    await wait_until(lambda: ConnectionState.DISCONNECTED in states)
    assert current(hass, power_id) == "true"
    assert hub.diagnostics()["grace_timer_running"] is True
    sim.delete_status(ROOM, "Display", 1, "power")
    await restart(sim)
    await wait_until(lambda: states[-1] is ConnectionState.CONNECTED)
    await hass.async_block_till_done()
    assert current(hass, power_id) == STATE_UNKNOWN
    assert seen == [STATE_UNKNOWN]
    assert hub.diagnostics()["grace_timer_running"] is False

    # Long outage: available until the grace period is over.
    states.clear()
    await sim.stop()
    await wait_until(lambda: ConnectionState.DISCONNECTED in states)
    assert hub.diagnostics()["grace_timer_running"] is True
    assert state_of(hass, "Display_1.volume").state == "30"
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=61))
    await hass.async_block_till_done()
    assert state_of(hass, "Display_1.volume").state == STATE_UNAVAILABLE

    await restart(sim)
    await wait_until(lambda: state_of(hass, "Display_1.volume").state == "30")


async def test_unload_during_grace_period_cancels_timer(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """Unloading mid-outage leaves no timer behind (the harness fails on lingering timers)."""
    entry = make_entry(sim, [system_subentry()], options={CONF_UNAVAILABLE_GRACE: 60})
    assert await setup_entry(hass, entry)
    states = record_states(hub_of(entry))
    await sim.stop()
    await wait_until(lambda: ConnectionState.DISCONNECTED in states)
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert entry.state is ConfigEntryState.NOT_LOADED


async def test_key_revoked_at_runtime_starts_reauth(
    hass: HomeAssistant, sim: PlaceOSSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A reconnect rejected with 401: entities unavailable and exactly one reauth flow."""
    entry = make_entry(sim, [system_subentry()])
    assert await setup_entry(hass, entry)
    states = record_states(hub_of(entry))

    sim.revoke_key(API_KEY)
    sim.drop_connections()
    await wait_until(lambda: ConnectionState.AUTH_FAILED in states)
    await hass.async_block_till_done()
    assert state_of(hass, "Display_1.power").state == STATE_UNAVAILABLE
    assert len(_reauth_flows(hass)) == 1
    assert sim.handshakes_rejected == 1
    assert API_KEY not in caplog.text


async def test_subentries_apply_live_without_reconnecting(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """Add, edit and remove systems: bind/unbind on the open socket, registries follow."""
    entry = make_entry(sim, [system_subentry(labels=ROOM_LABELS)])
    assert await setup_entry(hass, entry)
    entity_registry = er.async_get(hass)
    assert sim.bind_requests == 3

    # Add a system.
    lobby = ConfigSubentry(
        data=MappingProxyType(
            {
                CONF_SYS: LOBBY,
                CONF_SYSTEM_NAME: "Lobby",
                CONF_BINDINGS: [binding("Lighting_1.level"), binding("Lighting_1.scene")],
            }
        ),
        subentry_type=SUBENTRY_TYPE_SYSTEM,
        title="Lobby",
        unique_id=LOBBY,
    )
    assert hass.config_entries.async_add_subentry(entry, lobby)
    await hass.async_block_till_done()
    await sim.wait_for(lambda: sim.bind_requests == 5)
    await wait_until(lambda: hass.states.get("sensor.lobby_lighting_1_level") is not None)
    await wait_until(lambda: state_of(hass, "Lighting_1.level", LOBBY).state == "100")
    assert state_of(hass, "Lighting_1.scene", LOBBY).state == "day"
    lobby_device = _device(hass, LOBBY)
    assert lobby_device is not None
    assert lobby_device.name == "Lobby"

    # Edit it: one binding out, one in, and a new name.
    scene_id = entity_id(hass, "Lighting_1.scene", LOBBY)
    assert hass.config_entries.async_update_subentry(
        entry,
        lobby,
        data={
            CONF_SYS: LOBBY,
            CONF_SYSTEM_NAME: "Main lobby",
            CONF_BINDINGS: [binding("Lighting_1.level"), binding("Occupancy_1.people_count")],
        },
    )
    await hass.async_block_till_done()
    await sim.wait_for(lambda: sim.unbind_requests == 1 and sim.bind_requests == 6)
    await wait_until(lambda: state_of(hass, "Occupancy_1.people_count", LOBBY).state == "2")
    assert entity_registry.async_get(scene_id) is None
    assert hass.states.get(scene_id) is None
    lobby_device = _device(hass, LOBBY)
    assert lobby_device is not None
    assert lobby_device.name == "Main lobby"
    sim.set_status(LOBBY, "Lighting", 1, "scene", "night")  # unbound: must not come back
    sim.set_status(LOBBY, "Lighting", 1, "level", 10)
    await wait_until(lambda: state_of(hass, "Lighting_1.level", LOBBY).state == "10")
    assert hass.states.get(scene_id) is None

    # Remove it: unbound, entities and device gone.
    level_id = entity_id(hass, "Lighting_1.level", LOBBY)
    assert hass.config_entries.async_remove_subentry(entry, lobby.subentry_id)
    await hass.async_block_till_done()
    await sim.wait_for(lambda: sim.unbind_requests == 3)
    assert _device(hass, LOBBY) is None
    assert entity_registry.async_get(level_id) is None
    assert hass.states.get(level_id) is None

    # The room was never disturbed and nothing reconnected.
    assert sim.total_connections == 1
    assert sim.connections == 1
    assert entry.state is ConfigEntryState.LOADED
    sim.set_status(ROOM, "Display", 1, "volume", 42)
    await wait_until(lambda: state_of(hass, "Display_1.volume").state == "42")
    assert sorted(k.name for k in sim.bound_keys()) == ["input", "power", "volume"]


async def test_subentry_title_only_change_keeps_connection(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """A change that touches no binding sends nothing and keeps the socket."""
    entry = make_entry(sim, [system_subentry()])
    assert await setup_entry(hass, entry)
    subentry = next(iter(entry.subentries.values()))
    assert hass.config_entries.async_update_subentry(entry, subentry, title="Renamed")
    await hass.async_block_till_done()
    assert (sim.bind_requests, sim.unbind_requests, sim.total_connections) == (1, 0, 1)
    assert hass.config_entries.async_update_entry(entry, title="New title")
    await hass.async_block_till_done()
    assert (sim.bind_requests, sim.total_connections) == (1, 1)


async def test_options_change_reloads(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """Options (and data) changes reload the entry: a new socket."""
    entry = make_entry(sim, [system_subentry()])
    assert await setup_entry(hass, entry)
    assert hass.config_entries.async_update_entry(entry, options={CONF_EXEC_TIMEOUT: 3.0})
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    await sim.wait_for(lambda: sim.total_connections == 2 and sim.connections == 1)
    assert state_of(hass, "Display_1.power").state == "true"


async def test_stale_registry_entries_are_removed_at_setup(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """Bindings dropped while the entry was not loaded lose their entities on the next setup."""
    entry = make_entry(sim, [system_subentry(labels=ROOM_LABELS)])
    assert await setup_entry(hass, entry)
    input_id = entity_id(hass, "Display_1.input")
    assert await hass.config_entries.async_unload(entry.entry_id)
    subentry = next(iter(entry.subentries.values()))
    hass.config_entries.async_update_subentry(
        entry,
        subentry,
        data={**subentry.data, CONF_BINDINGS: [binding("Display_1.power")]},
    )
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert er.async_get(hass).async_get(input_id) is None
    assert state_of(hass, "Display_1.power").state == "true"


async def test_malformed_subentry_data_is_skipped(
    hass: HomeAssistant, sim: PlaceOSSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad items are ignored with a warning; duplicates bind once; other subentry types ignored."""
    broken = system_subentry(labels=["Display_1.power"])
    broken["data"] = {
        CONF_SYS: ROOM,
        CONF_SYSTEM_NAME: "",
        CONF_BINDINGS: [
            binding("Display_1.power"),
            binding("Display_1.power"),
            {"mod": "Display", "index": 0, "name": "volume"},
            {"mod": "", "name": "volume"},
            "Display_1.volume",
            {"mod": "Display", "name": "input"},  # index defaults to 1
        ],
    }
    no_sys = system_subentry(HUDDLE, "No system")
    no_sys["data"] = {CONF_SYSTEM_NAME: "No system", CONF_BINDINGS: []}
    no_sys["unique_id"] = "no-sys"
    other_type = system_subentry(LOBBY, "Other")
    other_type["subentry_type"] = "zone"
    entry = make_entry(sim, [broken, no_sys, other_type])
    assert await setup_entry(hass, entry)
    assert sim.bind_requests == 2
    assert state_of(hass, "Display_1.input").state == "hdmi"
    # An empty system name falls back to the subentry title.
    room_device = _device(hass, ROOM)
    assert room_device is not None
    assert room_device.name == "Boardroom"
    assert _device(hass, HUDDLE) is None
    assert "Ignoring duplicate PlaceOS binding Display_1.power" in caplog.text
    assert "Ignoring malformed PlaceOS binding" in caplog.text
    assert "names no system" in caplog.text


async def test_close_timeout_is_bounded(
    hass: HomeAssistant,
    sim: PlaceOSSimulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Unload never hangs: a client close that overruns the limit is abandoned with a warning."""
    entry = make_entry(sim, [system_subentry()])
    assert await setup_entry(hass, entry)
    monkeypatch.setattr(hub_module, "CLIENT_TIMINGS", ClientTimings(close_timeout=0.0))
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert "timed out" in caplog.text


async def test_system_without_bindings_gets_a_device(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """A system with no bindings yet is a device without entities; bindings added later appear."""
    entry = make_entry(sim, [system_subentry(labels=[])])
    assert await setup_entry(hass, entry)
    assert _device(hass, ROOM) is not None
    assert hass.states.async_entity_ids("sensor") == []
    subentry = next(iter(entry.subentries.values()))
    hass.config_entries.async_update_subentry(
        entry, subentry, data={**subentry.data, CONF_BINDINGS: [binding("Display_1.volume")]}
    )
    await hass.async_block_till_done()
    await wait_until(lambda: hass.states.get("sensor.boardroom_display_1_volume") is not None)
    await wait_until(lambda: state_of(hass, "Display_1.volume").state == "30")
    assert sim.total_connections == 1


async def test_subentry_change_during_unload_is_ignored(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """A change that lands while the entry unloads does not touch the closing hub."""
    entry = make_entry(sim, [system_subentry()])
    assert await setup_entry(hass, entry)
    unload = hass.async_create_task(hass.config_entries.async_unload(entry.entry_id))
    assert entry.state is ConfigEntryState.UNLOAD_IN_PROGRESS
    hass.config_entries.async_add_subentry(
        entry,
        ConfigSubentry(
            data=MappingProxyType({CONF_SYS: LOBBY, CONF_SYSTEM_NAME: "Lobby", CONF_BINDINGS: []}),
            subentry_type=SUBENTRY_TYPE_SYSTEM,
            title="Lobby",
            unique_id=LOBBY,
        ),
    )
    assert await unload
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert _device(hass, LOBBY) is None
    assert sim.bind_requests == 1


async def test_binding_listener_belongs_to_its_subscriber(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """A stale unsubscribe (entity replaced) does not remove its successor's listener."""
    entry = make_entry(sim, [system_subentry(labels=["Display_1.volume"])])
    assert await setup_entry(hass, entry)
    hub = hub_of(entry)
    key = next(iter(hub.systems.values())).keys[0]
    calls: list[str] = []
    remove_first = hub.async_add_binding_listener(key, lambda: calls.append("first"))
    remove_second = hub.async_add_binding_listener(key, lambda: calls.append("second"))
    remove_first()
    sim.set_status(ROOM, "Display", 1, "volume", 12)
    await wait_until(lambda: calls == ["second"])
    remove_second()
    sim.set_status(ROOM, "Display", 1, "volume", 13)
    await wait_until(lambda: hub.values[key] == 13)
    assert calls == ["second"]


@pytest.mark.parametrize(("verify_ssl", "loaded"), [(False, True), (True, False)])
async def test_tls_verification_follows_the_entry(
    hass: HomeAssistant,
    socket_enabled: None,
    monkeypatch: pytest.MonkeyPatch,
    verify_ssl: bool,
    loaded: bool,
) -> None:
    """A self-signed instance works with verification off and is not ready with it on."""
    from placeos_sim.tls import self_signed_ssl_context

    monkeypatch.setattr(
        hub_module, "CLIENT_TIMINGS", replace(hub_module.CLIENT_TIMINGS, setup_timeout=0.3)
    )

    tls_sim = PlaceOSSimulator(api_keys=(API_KEY,), ssl_context=self_signed_ssl_context())
    await tls_sim.start()
    try:
        entry = make_entry(tls_sim, [system_subentry()], verify_ssl=verify_ssl)
        assert await setup_entry(hass, entry) is loaded
        if loaded:
            assert state_of(hass, "Display_1.power").state == "true"
        else:
            assert entry.state is ConfigEntryState.SETUP_RETRY
            assert "TLS" in (entry.reason or "")
        assert await hass.config_entries.async_unload(entry.entry_id)
    finally:
        await tls_sim.stop()
