"""Base entity of the PlaceOS integration: one entity per binding, pushed by the hub."""

from __future__ import annotations

from homeassistant.core import callback
from homeassistant.helpers.entity import Entity

from .client import BindingKey
from .hub import PlaceOSHub, SystemConfig


class PlaceOSEntity(Entity):
    """An entity fed by one binding (sys, mod, index, name) of one system device.

    The hub calls this entity, and only this one, when its binding's value changes; it calls
    every entity when availability changes or values were resynced after a reconnect.
    """

    _attr_has_entity_name = True
    _attr_should_poll = False
    _attr_translation_key = "status"

    def __init__(self, hub: PlaceOSHub, system: SystemConfig, key: BindingKey) -> None:
        """Initialise the entity of `key` on the device of `system`."""
        self._hub = hub
        self._key = key
        self._attr_unique_id = hub.unique_id(key)
        self._attr_device_info = hub.device_info(system)
        # Name "Display 1 power" from the `status` translation.
        self._attr_translation_placeholders = {
            "mod": key.mod,
            "index": str(key.index),
            "name": key.name,
        }

    @property
    def available(self) -> bool:
        """Return True while the hub is connected (or within the grace period)."""
        return self._hub.available

    async def async_added_to_hass(self) -> None:
        """Subscribe to the binding and to availability, and take the current value."""
        await super().async_added_to_hass()
        self.async_on_remove(
            self._hub.async_add_binding_listener(self._key, self._async_value_changed)
        )
        self.async_on_remove(
            self._hub.async_add_availability_listener(self._async_availability_changed)
        )
        self._async_update_from_hub()

    @callback
    def _async_value_changed(self) -> None:
        self._async_update_from_hub()
        # While unavailable the state stays `unavailable`; recovery writes the fresh value.
        if self._hub.available:
            self.async_write_ha_state()

    @callback
    def _async_availability_changed(self) -> None:
        self._async_update_from_hub()
        self.async_write_ha_state()

    @callback
    def _async_update_from_hub(self) -> None:
        """Take the binding's current value from the hub into the entity's attributes."""
        raise NotImplementedError
