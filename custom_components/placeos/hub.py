"""The hub: one per config entry, the only place that knows both the client and HA.

It owns the PlaceOS WebSocket client, the bindings of the entry's "system" subentries and the
latest value of every binding, and turns client events into HA updates:

- a notify stores the value and calls the ONE listener registered for that binding key (the
  notifies of one socket read are applied together right after it, see `_async_on_notify`);
- connection state changes call the availability listeners (every entity of the entry);
- loss and recovery are logged once each at INFO, never per reconnect attempt;
- `SYNCING` (socket open again, binds re-sent) forgets the old values: the server does not
  replay changes made while the socket was down, the initial notifies that follow the binds are
  the fresh values, and a status that no longer exists gets no notify and becomes unknown;
- an optional grace period keeps entities available through short outages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
import logging
from typing import TYPE_CHECKING, Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.event import async_call_later
from yarl import URL

from .client import BindingKey, ConnectionState, PlaceOSWebSocket
from .const import (
    CONF_API_KEY,
    CONF_BINDINGS,
    CONF_EXEC_TIMEOUT,
    CONF_SYS,
    CONF_SYSTEM_NAME,
    CONF_UNAVAILABLE_GRACE,
    CONF_URL,
    CONF_VALUE_DECODING,
    CONF_VERIFY_SSL,
    DEFAULT_EXEC_TIMEOUT,
    DEFAULT_UNAVAILABLE_GRACE,
    DEFAULT_VALUE_DECODING,
    DEFAULT_VERIFY_SSL,
    DEVICE_MODEL,
    DOMAIN,
    MANUFACTURER,
    SETUP_TIMEOUT,
    SUBENTRY_TYPE_SYSTEM,
)

if TYPE_CHECKING:
    from . import PlaceOSConfigEntry

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClientTimings:
    """Timing parameters of the client and of setup/unload.

    Read from the module-level `CLIENT_TIMINGS` each time a client is created, so tests can
    replace that constant (monkeypatch) to run with tiny intervals.
    """

    setup_timeout: float = SETUP_TIMEOUT
    request_timeout: float = 10.0
    ping_interval: float = 15.0
    dead_after: float = 45.0
    backoff_min: float = 1.0
    backoff_max: float = 60.0
    close_timeout: float = 10.0


CLIENT_TIMINGS = ClientTimings()


def create_client(hass: HomeAssistant, entry: ConfigEntry) -> PlaceOSWebSocket:
    """Create the WebSocket client of a config entry on HA's shared aiohttp session."""
    timings = CLIENT_TIMINGS
    verify_ssl = bool(entry.data.get(CONF_VERIFY_SSL, DEFAULT_VERIFY_SSL))
    return PlaceOSWebSocket(
        async_get_clientsession(hass, verify_ssl=verify_ssl),
        entry.data[CONF_URL],
        entry.data[CONF_API_KEY],
        verify_ssl=verify_ssl,
        value_decoding=str(entry.options.get(CONF_VALUE_DECODING, DEFAULT_VALUE_DECODING)),
        request_timeout=timings.request_timeout,
        exec_timeout=float(entry.options.get(CONF_EXEC_TIMEOUT, DEFAULT_EXEC_TIMEOUT)),
        ping_interval=timings.ping_interval,
        dead_after=timings.dead_after,
        backoff_min=timings.backoff_min,
        backoff_max=timings.backoff_max,
    )


@dataclass(frozen=True, slots=True)
class SystemConfig:
    """The bindings of one "system" subentry (one HA device)."""

    subentry_id: str
    sys: str
    name: str
    keys: tuple[BindingKey, ...]


def _binding_from_data(sys: str, item: Any) -> BindingKey | None:
    if not isinstance(item, Mapping):
        return None
    mod, index, name = item.get("mod"), item.get("index", 1), item.get("name")
    if not isinstance(mod, str) or not mod or not isinstance(name, str) or not name:
        return None
    if type(index) is not int or index < 1:
        return None
    return BindingKey(sys, mod, index, name)


def systems_from_entry(entry: ConfigEntry) -> dict[str, SystemConfig]:
    """Read the systems and their bindings from the entry's subentries.

    Malformed items are skipped with a warning. A binding key already claimed by an earlier
    subentry is skipped too: one key is one entity.
    """
    systems: dict[str, SystemConfig] = {}
    claimed: set[BindingKey] = set()
    for subentry_id, subentry in entry.subentries.items():
        if subentry.subentry_type != SUBENTRY_TYPE_SYSTEM:
            continue
        sys = subentry.data.get(CONF_SYS)
        if not isinstance(sys, str) or not sys:
            _LOGGER.warning("Ignoring PlaceOS subentry %s: it names no system", subentry.title)
            continue
        keys: list[BindingKey] = []
        raw_bindings = subentry.data.get(CONF_BINDINGS)
        for item in raw_bindings if isinstance(raw_bindings, list) else []:
            key = _binding_from_data(sys, item)
            if key is None:
                _LOGGER.warning("Ignoring malformed PlaceOS binding %r of %s", item, sys)
            elif key not in claimed:
                claimed.add(key)
                keys.append(key)
            else:
                _LOGGER.warning("Ignoring duplicate PlaceOS binding %s of %s", key.label, sys)
        system_name = subentry.data.get(CONF_SYSTEM_NAME)
        systems[subentry_id] = SystemConfig(
            subentry_id=subentry_id,
            sys=sys,
            name=system_name if isinstance(system_name, str) and system_name else subentry.title,
            keys=tuple(keys),
        )
    return systems


type EntityAdder = Callable[[SystemConfig, Sequence[BindingKey]], None]
"""Registered by a platform: creates the entities of new bindings of one system."""


def _describe(error: BaseException | None) -> str:
    return (str(error) or type(error).__name__) if error is not None else "connection closed"


class PlaceOSHub:
    """Owns one PlaceOS connection, its bindings and their latest values."""

    def __init__(
        self, hass: HomeAssistant, entry: PlaceOSConfigEntry, client: PlaceOSWebSocket
    ) -> None:
        """Initialise; nothing is bound or connected until `async_start`."""
        self.hass = hass
        self.entry = entry
        self.client = client
        self.values: dict[BindingKey, Any] = {}
        self.systems: dict[str, SystemConfig] = {}
        self.unique_prefix = entry.unique_id or entry.entry_id
        self._url = str(entry.data[CONF_URL]).rstrip("/")
        self.host = URL(self._url).host or self._url
        self._grace = float(entry.options.get(CONF_UNAVAILABLE_GRACE, DEFAULT_UNAVAILABLE_GRACE))
        # Data and options this hub was built from: any change there needs a reload.
        self._data = dict(entry.data)
        self._options = dict(entry.options)
        self._bound: set[BindingKey] = set()
        self._binding_listeners: dict[BindingKey, CALLBACK_TYPE] = {}
        # Notifies received but not applied yet (see `_async_on_notify`), oldest first.
        self._pending_notifies: list[tuple[BindingKey, Any]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._availability_listeners: list[CALLBACK_TYPE] = []
        self._entity_adders: list[EntityAdder] = []
        self._available = False
        self._ever_connected = False
        self._outage = False
        self._setup_complete = False
        self._reauth_requested = False
        self._cancel_grace: CALLBACK_TYPE | None = None
        self._remove_state_listener: CALLBACK_TYPE | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    @callback
    def async_start(self) -> None:
        """Listen to the client and register the bindings of every subentry."""
        self._remove_state_listener = self.client.add_state_listener(self._async_on_state)
        self.systems = systems_from_entry(self.entry)
        self._async_apply_bindings({key for system in self.systems.values() for key in system.keys})

    @callback
    def async_setup_complete(self) -> None:
        """Mark setup as done: from now on a rejected key starts a reauth flow."""
        self._setup_complete = True
        self._async_sync_registries()

    async def async_close(self) -> None:
        """Stop listening and close the client; idempotent, bounded in time."""
        self._async_flush_notifies()
        self._async_cancel_grace()
        if self._remove_state_listener is not None:
            self._remove_state_listener()
            self._remove_state_listener = None
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(CLIENT_TIMINGS.close_timeout):
                await self.client.close()
        except TimeoutError:
            _LOGGER.warning("Closing the PlaceOS connection to %s timed out", self.host)
        self._async_flush_notifies()  # anything the reader handed over while closing

    def needs_reload(self) -> bool:
        """Return True when the entry's data or options differ from what the hub runs on."""
        return dict(self.entry.data) != self._data or dict(self.entry.options) != self._options

    # -- bindings and subentries -------------------------------------------------------------

    @callback
    def async_update_systems(self) -> None:
        """Apply the entry's current subentries live, without reconnecting.

        New bindings are bound on the open socket and get entities; removed ones are unbound
        and their entities (and devices of removed systems) leave the registries.
        """
        old_systems = self.systems
        self.systems = systems_from_entry(self.entry)
        self._async_apply_bindings({key for system in self.systems.values() for key in system.keys})
        self._async_sync_registries()
        for subentry_id, system in self.systems.items():
            old = old_systems.get(subentry_id)
            old_keys = set(old.keys) if old is not None else set()
            new_keys = [key for key in system.keys if key not in old_keys]
            if new_keys:
                for adder in self._entity_adders:
                    adder(system, new_keys)

    @callback
    def _async_apply_bindings(self, wanted: set[BindingKey]) -> None:
        self._async_flush_notifies()
        removed = self._bound - wanted
        added = wanted - self._bound
        self._bound = wanted
        if removed:
            for key in removed:
                self.values.pop(key, None)
            self.client.remove_bindings(removed)
        if added:
            self.client.add_bindings(dict.fromkeys(added, self._async_on_notify))

    def device_identifier(self, sys: str) -> tuple[str, str]:
        """Return the device registry identifier of a system."""
        return (DOMAIN, f"{self.unique_prefix}_{sys}")

    def configuration_url(self, sys: str) -> str:
        """Return the system's page in the instance's backoffice."""
        return f"{self._url}/backoffice/#/systems/{sys}"

    def device_info(self, system: SystemConfig) -> DeviceInfo:
        """Return the device of a system (strings only, no parent device)."""
        return DeviceInfo(
            identifiers={self.device_identifier(system.sys)},
            name=system.name,
            manufacturer=MANUFACTURER,
            model=DEVICE_MODEL,
            # The PlaceOS system id, shown on the device page (identifiers are not).
            serial_number=system.sys,
            configuration_url=self.configuration_url(system.sys),
        )

    def unique_id(self, key: BindingKey) -> str:
        """Return the entity unique id of a binding."""
        return f"{self.unique_prefix}_{key.sys}_{key.mod}_{key.index}_{key.name}"

    @callback
    def _async_sync_registries(self) -> None:
        """Create one device per system; remove entities and devices no subentry wants."""
        device_registry = dr.async_get(self.hass)
        entity_registry = er.async_get(self.hass)
        entry_id = self.entry.entry_id
        wanted_devices = {
            device_registry.async_get_or_create(
                config_entry_id=entry_id,
                config_subentry_id=system.subentry_id,
                **self.device_info(system),
            ).id
            for system in self.systems.values()
        }
        wanted_unique_ids = {
            self.unique_id(key) for system in self.systems.values() for key in system.keys
        }
        for entity in er.async_entries_for_config_entry(entity_registry, entry_id):
            if entity.unique_id not in wanted_unique_ids:
                entity_registry.async_remove(entity.entity_id)
        for device in dr.async_entries_for_config_entry(device_registry, entry_id):
            if device.id not in wanted_devices:
                device_registry.async_remove_device(device.id)

    @callback
    def async_register_entity_adder(self, adder: EntityAdder) -> CALLBACK_TYPE:
        """Let a platform create entities for bindings added at runtime."""
        self._entity_adders.append(adder)
        return lambda: self._entity_adders.remove(adder)

    # -- listeners ---------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Return True while connected, or disconnected for less than the grace period."""
        return self._available

    @callback
    def async_add_binding_listener(self, key: BindingKey, listener: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Call `listener` when the value of `key` changes; returns the unsubscribe callback."""
        self._binding_listeners[key] = listener

        @callback
        def remove() -> None:
            if self._binding_listeners.get(key) is listener:
                del self._binding_listeners[key]

        return remove

    @callback
    def async_add_availability_listener(self, listener: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Call `listener` when availability changes or values were resynced."""
        self._availability_listeners.append(listener)
        return lambda: self._availability_listeners.remove(listener)

    @callback
    def _async_on_notify(self, key: BindingKey, value: Any) -> None:
        """Take a notify; it is applied, with every other one of the same read, right after.

        The client hands over all the frames of one socket read in one go, often hundreds
        during a burst. Applying them afterwards (each one, in order, with its own value)
        rather than between the frames keeps the decoding and Home Assistant's state writes
        each hot in the CPU caches: about a tenth of the cost per notify in a burst (see
        benchmarks/README.md). Pending notifies are applied before anything else the hub
        does (connection state, bindings, close), so none is lost, reordered or late.
        """
        # The client stops routing a key as soon as `remove_bindings` returns: no late calls.
        pending = self._pending_notifies
        if not pending:
            self._flush_handle = self.hass.loop.call_soon(self._async_flush_notifies)
        pending.append((key, value))

    @callback
    def _async_flush_notifies(self) -> None:
        """Apply the pending notifies: store each value and call its one listener."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._pending_notifies = self._pending_notifies, []
        values = self.values
        listeners = self._binding_listeners
        for key, value in pending:
            values[key] = value
            if (listener := listeners.get(key)) is not None:
                try:
                    listener()
                except Exception:
                    # Logged, and the other notifies still applied.
                    _LOGGER.exception(
                        "Updating the entity of PlaceOS binding %s on %s failed", key.label, key.sys
                    )

    @callback
    def _async_notify_availability(self) -> None:
        for listener in list(self._availability_listeners):
            listener()

    # -- connection state --------------------------------------------------------------------

    @callback
    def _async_on_state(self, state: ConnectionState, error: BaseException | None) -> None:
        self._async_flush_notifies()  # what arrived before the change is applied before it
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug(
                "PlaceOS at %s: %s (%d bindings)%s",
                self.host,
                state.value,
                len(self._bound),
                f": {_describe(error)}" if error is not None else "",
            )
        if state is ConnectionState.SYNCING:
            self.values.clear()
        elif state is ConnectionState.CONNECTED:
            self._async_on_connected()
        elif state is ConnectionState.DISCONNECTED:
            self._async_on_disconnected(error)
        elif state is ConnectionState.AUTH_FAILED:
            self._async_on_auth_failed()

    @callback
    def _async_on_connected(self) -> None:
        self._async_cancel_grace()
        recovered = self._outage
        if recovered:
            self._outage = False
            _LOGGER.info("Connection to PlaceOS at %s restored", self.host)
        self._ever_connected = True
        self._available = True
        # Every entity writes its state: available again, or (after an outage shorter than the
        # grace period) its resynced value, `unknown` for a status deleted meanwhile.
        self._async_notify_availability()

    @callback
    def _async_on_disconnected(self, error: BaseException | None) -> None:
        if not self._ever_connected or self._outage:
            return  # setup reports the first failure; one line per outage, not per attempt
        self._outage = True
        _LOGGER.info(
            "Connection to PlaceOS at %s lost (%s); reconnecting in the background",
            self.host,
            _describe(error),
        )
        if self._grace > 0:
            self._cancel_grace = async_call_later(self.hass, self._grace, self._async_grace_over)
        else:
            self._async_set_unavailable()

    @callback
    def _async_on_auth_failed(self) -> None:
        self._async_cancel_grace()
        self._async_set_unavailable()
        if self._setup_complete and not self._reauth_requested:
            self._reauth_requested = True
            _LOGGER.warning(
                "PlaceOS at %s rejected the API key; re-authentication is required", self.host
            )
            self.entry.async_start_reauth(self.hass)

    @callback
    def _async_grace_over(self, _now: datetime) -> None:
        self._cancel_grace = None
        self._async_set_unavailable()

    @callback
    def _async_cancel_grace(self) -> None:
        if self._cancel_grace is not None:
            self._cancel_grace()
            self._cancel_grace = None

    @callback
    def _async_set_unavailable(self) -> None:
        if self._available:
            self._available = False
            self._async_notify_availability()

    # -- diagnostics -------------------------------------------------------------------------

    def diagnostics(self) -> dict[str, Any]:
        """Return the hub's state for the diagnostics download (no secrets)."""
        return {
            "available": self._available,
            "outage": self._outage,
            "grace_period": self._grace,
            "grace_timer_running": self._cancel_grace is not None,
            "reauth_requested": self._reauth_requested,
            "bindings": len(self._bound),
            "values": len(self.values),
            "binding_listeners": len(self._binding_listeners),
        }
