"""Diagnostics download: connection, hub state, subentries and bindings, key redacted."""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant

from . import PlaceOSConfigEntry
from .const import CONF_API_KEY
from .sensor import compact_json

TO_REDACT = {CONF_API_KEY}
# Values are shown as compact JSON cut to this many characters.
MAX_VALUE_LENGTH = 1000
REDACTED = "**REDACTED**"


def _scrub(data: Any, secret: str) -> Any:
    """Replace the secret wherever it might still appear (defence in depth)."""
    if isinstance(data, str):
        return data.replace(secret, REDACTED) if secret else data
    if isinstance(data, dict):
        return {_scrub(key, secret): _scrub(value, secret) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_scrub(item, secret) for item in data]
    return data


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: PlaceOSConfigEntry
) -> dict[str, Any]:
    """Return diagnostics for a config entry."""
    diagnostics: dict[str, Any] = {
        "entry": {
            "title": entry.title,
            "unique_id": entry.unique_id,
            "state": entry.state.value,
            "data": async_redact_data(dict(entry.data), TO_REDACT),
            "options": async_redact_data(dict(entry.options), TO_REDACT),
        },
        "subentries": [
            {
                "subentry_id": subentry.subentry_id,
                "subentry_type": subentry.subentry_type,
                "title": subentry.title,
                "unique_id": subentry.unique_id,
                "data": async_redact_data(dict(subentry.data), TO_REDACT),
            }
            for subentry in entry.subentries.values()
        ],
    }
    if entry.state is ConfigEntryState.LOADED:
        hub = entry.runtime_data
        diagnostics["client"] = hub.client.diagnostics()
        diagnostics["hub"] = hub.diagnostics()
        diagnostics["systems"] = [
            {
                "subentry_id": system.subentry_id,
                "sys": system.sys,
                "name": system.name,
                "bindings": [
                    {
                        "binding": key.label,
                        "has_value": key in hub.values,
                        "value": compact_json(hub.values.get(key), MAX_VALUE_LENGTH),
                    }
                    for key in system.keys
                ],
            }
            for system in hub.systems.values()
        ]
    secret = entry.data.get(CONF_API_KEY)
    return _scrub(diagnostics, secret) if isinstance(secret, str) else diagnostics
