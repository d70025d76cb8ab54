"""Sensors: one per bound PlaceOS status variable.

State mapping (the README quotes this):

| PlaceOS value          | sensor state                                         |
|------------------------|------------------------------------------------------|
| `null` / no value yet  | `unknown`                                            |
| number (int, float)    | the number                                           |
| `true` / `false`       | `"true"` / `"false"`                                 |
| string                 | the string, cut to 255 characters                    |
| list, object           | compact JSON (`[1,2]`, `{"a":1}`), cut to 255 chars  |

Booleans, lists and objects are rendered as their JSON text, so with the default `auto` value
decoding a stringified `"true"` and a raw `true` give the same state. The full value, of any
size and type, is in the attribute `value` (excluded from the recorder); the attributes `sys`,
`mod`, `index` and `name` identify the binding for templates.

No state class is set: the type of a status is not declared and may change between notifies,
and HA raises for a non-numeric state of a sensor with a state class. Use a template sensor to
give a numeric status a unit, a device class and long-term statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
from typing import Any

from homeassistant.components.sensor import SensorEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from . import PlaceOSConfigEntry
from .client import BindingKey
from .const import ATTR_INDEX, ATTR_MOD, ATTR_NAME, ATTR_SYS, ATTR_VALUE, MAX_STATE_LENGTH
from .entity import PlaceOSEntity
from .hub import PlaceOSHub, SystemConfig

# Push only: entities never poll nor run updates.
PARALLEL_UPDATES = 0

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def compact_json(value: Any, limit: int) -> str:
    """Return the compact JSON text of `value`, cut to `limit` characters.

    Encodes incrementally and stops once `limit` is reached, so a megabyte-sized list costs
    no more than a short one.
    """
    chunks: list[str] = []
    size = 0
    for chunk in _ENCODER.iterencode(value):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return "".join(chunks)[:limit]


# Integers in this open range have at most MAX_STATE_LENGTH characters ("-" included).
_STATE_INT_MIN = -(10 ** (MAX_STATE_LENGTH - 1))
_STATE_INT_MAX = 10**MAX_STATE_LENGTH


def state_from_value(value: Any) -> StateType:
    """Map a PlaceOS value to a sensor state (see the module docstring)."""
    # Fast paths for the exact types of the common values (this runs on every notify).
    value_type = type(value)
    if value_type is int:
        integer: int = value
        if _STATE_INT_MIN < integer < _STATE_INT_MAX:
            return integer
        return str(integer)[:MAX_STATE_LENGTH]
    if value_type is str:
        text: str = value
        return text if len(text) <= MAX_STATE_LENGTH else text[:MAX_STATE_LENGTH]
    if value_type is float:
        real: float = value
        return real  # a float's text has at most 24 characters
    if value is None:
        return None
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = str(value)
        return value if len(text) <= MAX_STATE_LENGTH else text[:MAX_STATE_LENGTH]
    if isinstance(value, str):
        return value[:MAX_STATE_LENGTH]
    return compact_json(value, MAX_STATE_LENGTH)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PlaceOSConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a sensor per binding, each on its system subentry; later ones as they come."""
    hub = entry.runtime_data

    @callback
    def add_system_entities(system: SystemConfig, keys: Sequence[BindingKey]) -> None:
        async_add_entities(
            [PlaceOSSensor(hub, system, key) for key in keys],
            config_subentry_id=system.subentry_id,
        )

    entry.async_on_unload(hub.async_register_entity_adder(add_system_entities))
    for system in hub.systems.values():
        if system.keys:
            add_system_entities(system, system.keys)


class PlaceOSSensor(PlaceOSEntity, SensorEntity):
    """The value of one PlaceOS status variable."""

    _unrecorded_attributes = frozenset({ATTR_VALUE})

    def __init__(self, hub: PlaceOSHub, system: SystemConfig, key: BindingKey) -> None:
        """Initialise the sensor of `key`."""
        super().__init__(hub, system, key)
        self._binding_attributes: dict[str, Any] = {
            ATTR_SYS: key.sys,
            ATTR_MOD: key.mod,
            ATTR_INDEX: key.index,
            ATTR_NAME: key.name,
        }
        self._async_update_from_hub()

    @callback
    def _async_update_from_hub(self) -> None:
        value = self._hub.values.get(self._key)
        self._attr_native_value = state_from_value(value)
        self._attr_extra_state_attributes = {**self._binding_attributes, ATTR_VALUE: value}
