"""The options flow: value decoding, exec timeout, unavailable grace period."""

from __future__ import annotations

from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType, InvalidData
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.placeos.const import (
    CONF_API_KEY,
    CONF_EXEC_TIMEOUT,
    CONF_UNAVAILABLE_GRACE,
    CONF_URL,
    CONF_VALUE_DECODING,
    CONF_VERIFY_SSL,
    DOMAIN,
)


def _entry(options: dict[str, Any] | None = None) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        title="Demo Building",
        unique_id="authority-demo0001",
        data={
            CONF_URL: "https://placeos.example.com",
            CONF_API_KEY: "keyid01.s3cr3t",
            CONF_VERIFY_SSL: True,
        },
        options=options or {},
    )


def _form_values(result: Any) -> dict[str, Any]:
    """What the form shows for each field: the suggested value, else the default."""
    values: dict[str, Any] = {}
    for marker in result["data_schema"].schema:
        suggested = (marker.description or {}).get("suggested_value")
        values[str(marker)] = suggested if suggested is not None else marker.default()
    return values


async def test_options_defaults_then_saved(hass: HomeAssistant) -> None:
    """An entry without options shows the defaults; submitted values become the options."""
    entry = _entry()
    entry.add_to_hass(hass)

    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    assert _form_values(result) == {
        CONF_VALUE_DECODING: "auto",
        CONF_EXEC_TIMEOUT: 10.0,
        CONF_UNAVAILABLE_GRACE: 0.0,
    }

    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {CONF_VALUE_DECODING: "raw", CONF_EXEC_TIMEOUT: 30, CONF_UNAVAILABLE_GRACE: 120},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {
        CONF_VALUE_DECODING: "raw",
        CONF_EXEC_TIMEOUT: 30.0,
        CONF_UNAVAILABLE_GRACE: 120.0,
    }
    # The data (and the key in it) are untouched.
    assert entry.data[CONF_API_KEY] == "keyid01.s3cr3t"


async def test_options_show_current_values(hass: HomeAssistant) -> None:
    """The form starts from the entry's current options."""
    entry = _entry(
        {CONF_VALUE_DECODING: "raw", CONF_EXEC_TIMEOUT: 45.0, CONF_UNAVAILABLE_GRACE: 5.0}
    )
    entry.add_to_hass(hass)

    result = await hass.config_entries.options.async_init(entry.entry_id)

    assert _form_values(result) == {
        CONF_VALUE_DECODING: "raw",
        CONF_EXEC_TIMEOUT: 45.0,
        CONF_UNAVAILABLE_GRACE: 5.0,
    }


@pytest.mark.parametrize(
    "user_input",
    [
        {CONF_VALUE_DECODING: "json", CONF_EXEC_TIMEOUT: 10, CONF_UNAVAILABLE_GRACE: 0},
        {CONF_VALUE_DECODING: "auto", CONF_EXEC_TIMEOUT: 0.5, CONF_UNAVAILABLE_GRACE: 0},
        {CONF_VALUE_DECODING: "auto", CONF_EXEC_TIMEOUT: 301, CONF_UNAVAILABLE_GRACE: 0},
        {CONF_VALUE_DECODING: "auto", CONF_EXEC_TIMEOUT: 10, CONF_UNAVAILABLE_GRACE: -1},
        {CONF_VALUE_DECODING: "auto", CONF_EXEC_TIMEOUT: 10, CONF_UNAVAILABLE_GRACE: 601},
    ],
    ids=[
        "unknown-decoding",
        "timeout-too-short",
        "timeout-too-long",
        "grace-negative",
        "grace-too-long",
    ],
)
async def test_options_out_of_range_rejected(
    hass: HomeAssistant, user_input: dict[str, Any]
) -> None:
    """Values outside the selectors' ranges never reach the entry."""
    entry = _entry()
    entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(entry.entry_id)

    with pytest.raises(InvalidData):
        await hass.config_entries.options.async_configure(result["flow_id"], user_input)
    assert entry.options == {}
