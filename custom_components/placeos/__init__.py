"""The PlaceOS integration: live status variables of PlaceOS systems, and `placeos.exec`."""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryAuthFailed, ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.typing import ConfigType

from . import hub as hub_module
from .client import PlaceOSAuthError, PlaceOSError, PlaceOSForbiddenError
from .const import DOMAIN
from .hub import PlaceOSHub
from .services import async_setup_services

PLATFORMS: list[Platform] = [Platform.SENSOR]

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)

type PlaceOSConfigEntry = ConfigEntry[PlaceOSHub]


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the integration's actions (once, independent of config entries)."""
    async_setup_services(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: PlaceOSConfigEntry) -> bool:
    """Connect to the PlaceOS instance and bind the statuses of every system subentry."""
    client = hub_module.create_client(hass, entry)
    hub = PlaceOSHub(hass, entry, client)
    # Registered first so every failure path below (and unload) closes the client.
    entry.async_on_unload(hub.async_close)
    hub.async_start()
    entry.async_create_background_task(hass, client.run(), f"{DOMAIN} websocket {entry.title}")

    try:
        await client.wait_connected(hub_module.CLIENT_TIMINGS.setup_timeout)
    except PlaceOSAuthError as err:
        await hub.async_close()
        raise ConfigEntryAuthFailed(
            translation_domain=DOMAIN,
            translation_key="forbidden"
            if isinstance(err, PlaceOSForbiddenError)
            else "auth_failed",
            translation_placeholders={"host": hub.host},
        ) from err
    except (PlaceOSError, TimeoutError) as err:
        await hub.async_close()
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="cannot_connect",
            translation_placeholders={"host": hub.host, "error": str(err) or type(err).__name__},
        ) from err

    entry.runtime_data = hub
    hub.async_setup_complete()
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    entry.async_on_unload(entry.add_update_listener(_async_update_listener))
    return True


async def async_unload_entry(hass: HomeAssistant, entry: PlaceOSConfigEntry) -> bool:
    """Unload the platforms and close the connection (bounded in time)."""
    unload_ok = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    # Closed even if a platform failed to unload: no socket may outlive the entry.
    await entry.runtime_data.async_close()
    return unload_ok


async def _async_update_listener(hass: HomeAssistant, entry: PlaceOSConfigEntry) -> None:
    """Reload when data or options changed; apply subentry changes live.

    HA calls update listeners for changes of the entry itself and when a subentry is added,
    updated or removed (`async_add_subentry`, `async_update_subentry` and
    `async_remove_subentry` all end in the same notification, in 2026.2 and 2026.11 alike).
    """
    if entry.state is not ConfigEntryState.LOADED:
        return
    hub = entry.runtime_data
    if hub.needs_reload():
        hass.config_entries.async_schedule_reload(entry.entry_id)
    else:
        hub.async_update_systems()
