"""The `placeos.exec` action against the simulator: results, PlaceOS errors, bad input."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.placeos.client import ConnectionState
from custom_components.placeos.const import CONF_EXEC_TIMEOUT, DOMAIN, SERVICE_EXEC
from placeos_sim import DriverError, PlaceOSSimulator, UnexpectedFailure

from .conftest import (
    ADMIN_KEY,
    API_KEY,
    ROOM,
    hub_of,
    make_entry,
    record_states,
    setup_entry,
    state_of,
    system_subentry,
    wait_until,
)


async def _exec(hass: HomeAssistant, **data: Any) -> Any:
    return await hass.services.async_call(
        DOMAIN, SERVICE_EXEC, data, blocking=True, return_response=True
    )


@pytest.fixture
async def entry(hass: HomeAssistant, sim: PlaceOSSimulator) -> MockConfigEntry:
    """A loaded entry bound to the room's display power."""
    config_entry = make_entry(sim, [system_subentry(labels=["Display_1.power"])])
    assert await setup_entry(hass, config_entry)
    return config_entry


async def test_action_registered_without_entries(hass: HomeAssistant) -> None:
    """`async_setup` registers the action, so automations validate before an entry loads."""
    from homeassistant.setup import async_setup_component

    assert await async_setup_component(hass, DOMAIN, {})
    assert hass.services.has_service(DOMAIN, SERVICE_EXEC)
    with pytest.raises(ServiceValidationError) as err:
        await _exec(hass, sys=ROOM, mod="Display", name="power")
    assert err.value.translation_key == "no_loaded_entries"


async def test_exec_returns_value(
    hass: HomeAssistant, sim: PlaceOSSimulator, entry: MockConfigEntry
) -> None:
    """The method's result comes back as {"value": …}; its status change reaches the sensor."""
    response = await _exec(hass, sys=ROOM, mod="Display", index=1, name="power", args=[False])
    assert response == {"value": False}
    await wait_until(lambda: state_of(hass, "Display_1.power").state == "false")
    request = sim.requests[-1]
    assert (request.cmd, request.sys, request.mod, request.index, request.name, request.args) == (
        "exec",
        ROOM,
        "Display",
        1,
        "power",
        [False],
    )


async def test_exec_defaults_and_argument_wrapping(
    hass: HomeAssistant, sim: PlaceOSSimulator, entry: MockConfigEntry
) -> None:
    """Index defaults to 1; a single argument is wrapped; null means no arguments."""
    sim.set_method(ROOM, "Display", 2, "echo", lambda *args: list(args))
    assert await _exec(hass, sys=ROOM, mod="Display", name="volume", args=55) == {"value": 55}
    assert sim.requests[-1].index == 1
    assert sim.requests[-1].args == [55]
    assert await _exec(hass, sys=ROOM, mod="Display", index="2", name="echo", args=None) == {
        "value": []
    }
    assert await _exec(hass, sys=ROOM, mod="Display", index=2.0, name="echo", args=[[1, 2]]) == {
        "value": [[1, 2]]
    }
    structured = {"a": [1, {"b": None}], "c": "é"}
    assert await _exec(hass, sys=ROOM, mod="Display", index=2, name="echo", args=[structured]) == {
        "value": [structured]
    }
    # The response must be JSON-serialisable as is.
    json.dumps(await _exec(hass, sys=ROOM, mod="Bookings", name="refresh"))


async def test_exec_without_response(
    hass: HomeAssistant, sim: PlaceOSSimulator, entry: MockConfigEntry
) -> None:
    """The response is optional: a plain blocking call works too."""
    result = await hass.services.async_call(
        DOMAIN,
        SERVICE_EXEC,
        {"sys": ROOM, "mod": "Display", "name": "input", "args": ["hdmi2"]},
        blocking=True,
    )
    assert result is None
    assert sim.get_status(ROOM, "Display", 1, "input") == "hdmi2"


def _raise(error: Exception) -> Any:
    def handler(*_args: Any) -> Any:
        raise error

    return handler


@pytest.mark.parametrize(
    ("target", "method", "key", "error_code", "message"),
    [
        (("Projector", 1), None, "module_not_found", "6", "could not find module"),
        (("Display", 1), None, "function_not_found", "1", "could not find function nope"),
        (("_Admin", 1), None, "access_denied", "2", "privileged function nope"),
        (("Display", 1), DriverError("lamp failure", 503), "request_failed", "3", "lamp failure"),
        (("Display", 1), ValueError("bad level"), "request_failed", "3", "bad level"),
        (("Display", 1), UnexpectedFailure("core down"), "unexpected_failure", "7", "core down"),
    ],
)
async def test_exec_placeos_errors(
    hass: HomeAssistant,
    sim: PlaceOSSimulator,
    entry: MockConfigEntry,
    *,
    target: tuple[str, int],
    method: Exception | None,
    key: str,
    error_code: str,
    message: str,
) -> None:
    """Each PlaceOS error code becomes its own translated HomeAssistantError."""
    mod, index = target
    if mod == "_Admin":
        sim.set_method(ROOM, mod, index, "nope", lambda: "done", privileged=True)
    elif method is not None:
        sim.set_method(ROOM, mod, index, "nope", _raise(method))
    with pytest.raises(HomeAssistantError) as err:
        await _exec(hass, sys=ROOM, mod=mod, index=index, name="nope")
    assert not isinstance(err.value, ServiceValidationError)
    assert err.value.translation_domain == DOMAIN
    assert err.value.translation_key == key
    placeholders = err.value.translation_placeholders or {}
    assert placeholders["error_code"] == error_code
    assert message in placeholders["message"]
    # The translated text is used and filled in.
    assert message in str(err.value)
    assert f"{mod}_{index}" in str(err.value)


async def test_exec_privileged_method_with_admin_key(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """An admin key may call a privileged method."""
    config_entry = make_entry(sim, api_key=ADMIN_KEY)
    assert await setup_entry(hass, config_entry)
    assert await _exec(hass, sys=ROOM, mod="_Admin", name="restart") == {"value": "restarting"}


@pytest.mark.parametrize(
    ("frame", "key", "error_code"),
    [
        ({"msg": "odd failure"}, "command_failed", "None"),
        ({"msg": "odd failure", "error_code": 0}, "command_failed", "0"),
        ({"msg": "odd failure", "error_code": 5}, "module_not_found", "5"),
        ({"error_code": 4}, "command_failed", "4"),
    ],
)
async def test_exec_unusual_error_replies(
    hass: HomeAssistant,
    sim: PlaceOSSimulator,
    entry: MockConfigEntry,
    *,
    frame: dict[str, Any],
    key: str,
    error_code: str,
) -> None:
    """Error replies without a known category still surface as translated errors."""
    sim.drop_replies = True
    call = asyncio.ensure_future(_exec(hass, sys=ROOM, mod="Display", name="power", args=[True]))
    await sim.wait_for(lambda: sim.exec_requests == 1)
    sim.inject_frame(json.dumps({"id": sim.requests[-1].id, "type": "error", **frame}))
    with pytest.raises(HomeAssistantError) as err:
        await call
    assert err.value.translation_key == key
    assert (err.value.translation_placeholders or {})["error_code"] == error_code


async def test_exec_timeout(
    hass: HomeAssistant, sim: PlaceOSSimulator, entry: MockConfigEntry
) -> None:
    """No reply within the given timeout: a translated timeout error."""
    sim.drop_replies = True
    with pytest.raises(HomeAssistantError) as err:
        await _exec(hass, sys=ROOM, mod="Display", name="power", args=[True], timeout=0.1)
    assert err.value.translation_key == "exec_timeout"
    assert (err.value.translation_placeholders or {})["timeout"] == "0.1"
    assert "0.1 s" in str(err.value)


async def test_exec_timeout_defaults_to_option(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """Without `timeout` the entry's exec timeout option applies."""
    config_entry = make_entry(sim, options={CONF_EXEC_TIMEOUT: 0.2})
    assert await setup_entry(hass, config_entry)
    sim.drop_replies = True
    with pytest.raises(HomeAssistantError) as err:
        await _exec(hass, sys=ROOM, mod="Display", name="power")
    assert err.value.translation_key == "exec_timeout"
    assert (err.value.translation_placeholders or {})["timeout"] == "0.2"


async def test_exec_not_connected(
    hass: HomeAssistant, sim: PlaceOSSimulator, entry: MockConfigEntry
) -> None:
    """While the instance is down the action fails at once with a translated error."""
    states = record_states(hub_of(entry))
    await sim.stop()
    await wait_until(lambda: ConnectionState.DISCONNECTED in states)
    with pytest.raises(HomeAssistantError) as err:
        await _exec(hass, sys=ROOM, mod="Display", name="power", args=[True])
    assert err.value.translation_key == "not_connected"
    assert "127.0.0.1" in str(err.value)


async def test_exec_connection_lost_during_call(
    hass: HomeAssistant, sim: PlaceOSSimulator, entry: MockConfigEntry
) -> None:
    """The socket drops while waiting for the reply: a translated communication error."""
    sim.drop_replies = True
    call = asyncio.ensure_future(_exec(hass, sys=ROOM, mod="Display", name="power", args=[True]))
    await sim.wait_for(lambda: sim.exec_requests == 1)
    sim.drop_connections()
    with pytest.raises(HomeAssistantError) as err:
        await call
    assert err.value.translation_key == "communication_error"
    assert API_KEY not in str(err.value)


@pytest.mark.parametrize(
    "data",
    [
        {"mod": "Display", "name": "power"},
        {"sys": ROOM, "name": "power"},
        {"sys": ROOM, "mod": "Display"},
        {"sys": 5, "mod": "Display", "name": "power"},
        {"sys": ROOM, "mod": ["Display"], "name": "power"},
        {"sys": ROOM, "mod": "Display", "name": "  "},
        {"sys": ROOM, "mod": "Display", "name": "power", "index": "abc"},
        {"sys": ROOM, "mod": "Display", "name": "power", "index": 0},
        {"sys": ROOM, "mod": "Display", "name": "power", "index": True},
        {"sys": ROOM, "mod": "Display", "name": "power", "index": 1.5},
        {"sys": ROOM, "mod": "Display", "name": "power", "index": 2**31},
        {"sys": ROOM, "mod": "Display", "name": "power", "index": "9" * 5000},
        {"sys": ROOM, "mod": "Display", "name": "power", "index": "²"},
        {"sys": ROOM, "mod": "Display", "name": "power", "timeout": 0},
        {"sys": ROOM, "mod": "Display", "name": "power", "timeout": 301},
        {"sys": ROOM, "mod": "Display", "name": "power", "timeout": "soon"},
        {"sys": ROOM, "mod": "Display", "name": "power", "timeout": True},
        {"sys": ROOM, "mod": "Display", "name": "power", "cmd": "bind"},
        {"sys": ROOM, "mod": "Display", "name": "power", "id": 7},
    ],
)
async def test_exec_rejects_bad_input(
    hass: HomeAssistant, sim: PlaceOSSimulator, entry: MockConfigEntry, data: dict[str, Any]
) -> None:
    """Missing fields, wrong types and extra keys: translated validation error, nothing sent."""
    with pytest.raises(ServiceValidationError) as err:
        await _exec(hass, **data)
    assert err.value.translation_key == "invalid_action_data"
    assert "Invalid data for placeos.exec" in str(err.value)
    assert sim.exec_requests == 0


async def test_exec_accepts_timeout_text(
    hass: HomeAssistant, sim: PlaceOSSimulator, entry: MockConfigEntry
) -> None:
    """A timeout given as text (from a template) is accepted."""
    assert await _exec(hass, sys=ROOM, mod="Display", name="power", timeout="2.5") == {
        "value": None
    }


async def test_exec_entry_selection(
    hass: HomeAssistant, sim: PlaceOSSimulator, entry: MockConfigEntry
) -> None:
    """config_entry_id: unknown, other domain, not loaded, several loaded without it."""
    base = {"sys": ROOM, "mod": "Display", "name": "power", "args": [True]}
    assert await _exec(hass, config_entry_id=entry.entry_id, **base) == {"value": True}

    with pytest.raises(ServiceValidationError) as err:
        await _exec(hass, config_entry_id="no-such-entry", **base)
    assert err.value.translation_key == "entry_not_found"

    foreign = MockConfigEntry(domain="other_domain")
    foreign.add_to_hass(hass)
    with pytest.raises(ServiceValidationError) as err:
        await _exec(hass, config_entry_id=foreign.entry_id, **base)
    assert err.value.translation_key == "entry_not_found"

    second = make_entry(sim, unique_id="authority-second", title="Second")
    assert await setup_entry(hass, second)
    with pytest.raises(ServiceValidationError) as err:
        await _exec(hass, **base)
    assert err.value.translation_key == "multiple_entries"
    assert "Demo Building" in str(err.value)
    assert await _exec(hass, config_entry_id=second.entry_id, **base) == {"value": True}

    assert await hass.config_entries.async_unload(second.entry_id)
    with pytest.raises(ServiceValidationError) as err:
        await _exec(hass, config_entry_id=second.entry_id, **base)
    assert err.value.translation_key == "entry_not_loaded"
    # Only one entry is loaded again: no id needed.
    assert await _exec(hass, **base) == {"value": True}


def test_translations_and_services_yaml_match_the_code() -> None:
    """Every raised translation key has a message; services.yaml and en.json agree."""
    import re

    from homeassistant.util.yaml import load_yaml_dict

    from custom_components.placeos import services as services_module

    root = Path(services_module.__file__).parent
    strings = json.loads((root / "translations/en.json").read_text(encoding="utf-8"))
    raised: set[str] = set()
    for module in ("__init__.py", "services.py"):
        code = (root / module).read_text(encoding="utf-8")
        raised |= set(re.findall(r'translation_key="(\w+)"', code))
        raised |= set(re.findall(r'else "(\w+)"', code))
    raised |= set(services_module._COMMAND_ERROR_KEYS.values()) | {"command_failed"}
    assert raised <= set(strings["exceptions"])

    yaml_fields = set(load_yaml_dict(str(root / "services.yaml"))["exec"]["fields"])
    assert yaml_fields == set(strings["services"]["exec"]["fields"])
    assert yaml_fields == {str(key) for key in services_module.EXEC_SCHEMA.schema}
    icons = json.loads((root / "icons.json").read_text(encoding="utf-8"))
    assert icons["services"]["exec"]["service"].startswith("mdi:")
