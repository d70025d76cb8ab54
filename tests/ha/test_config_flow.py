"""The config flow (user, reauth, reconfigure) against the PlaceOS simulator over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
import json
import logging
from pathlib import Path
import re
from typing import Any
from unittest.mock import patch

from homeassistant.config_entries import SOURCE_REAUTH, SOURCE_USER, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult, FlowResultType
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.placeos import config_flow, hub as hub_module
from custom_components.placeos.client import PlaceOSApi
from custom_components.placeos.const import (
    CONF_API_KEY,
    CONF_EXEC_TIMEOUT,
    CONF_UNAVAILABLE_GRACE,
    CONF_URL,
    CONF_VALUE_DECODING,
    CONF_VERIFY_SSL,
    DOMAIN,
)
from placeos_sim import PlaceOSSimulator, Scenario
from placeos_sim.tls import self_signed_ssl_context

from .conftest import API_KEY, AUTHORITY_ID

NEW_KEY = "keyid02.s3cr3t-new-key"
AUTHORITY_NAME = "Demo Building"


@pytest.fixture
def no_setup() -> Iterator[None]:
    """Pure flow tests: creating an entry must not start the runtime."""
    with (
        patch("custom_components.placeos.async_setup_entry", return_value=True),
        patch("custom_components.placeos.async_unload_entry", return_value=True),
    ):
        yield


def _suggested(result: FlowResult[Any, Any], key: str) -> Any:
    """The value a form pre-fills for `key` (None when it pre-fills nothing)."""
    for marker in result["data_schema"].schema:
        if marker == key:
            return (marker.description or {}).get("suggested_value")
    raise AssertionError(f"{key} is not on the form")


def _entry(url: str, api_key: str = API_KEY, **kwargs: Any) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        title=AUTHORITY_NAME,
        unique_id=kwargs.pop("unique_id", AUTHORITY_ID),
        data={CONF_URL: url, CONF_API_KEY: api_key, CONF_VERIFY_SSL: True},
        **kwargs,
    )


async def _user_form(hass: HomeAssistant) -> FlowResult[Any, Any]:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}
    return result


async def _submit_user(
    hass: HomeAssistant, url: str, api_key: str = API_KEY, verify_ssl: bool = True
) -> FlowResult[Any, Any]:
    result = await _user_form(hass)
    return await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: url, CONF_API_KEY: api_key, CONF_VERIFY_SSL: verify_ssl}
    )


# ---------------------------------------------------------------------------------- user step


@pytest.mark.usefixtures("no_setup")
async def test_user_creates_entry(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """Instance, key and WebSocket are checked; the URL is cleaned; defaults become options."""
    connections_before = sim.total_connections
    result = await _submit_user(hass, f"  {sim.url}/backoffice/?tab=systems#top ", f" {API_KEY} ")

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == AUTHORITY_NAME
    assert result["data"] == {CONF_URL: sim.url, CONF_API_KEY: API_KEY, CONF_VERIFY_SSL: True}
    entry = result["result"]
    assert entry.unique_id == AUTHORITY_ID
    assert entry.options == {
        CONF_VALUE_DECODING: "auto",
        CONF_EXEC_TIMEOUT: 10.0,
        CONF_UNAVAILABLE_GRACE: 0.0,
    }
    # The WebSocket was probed, and the probe's socket is closed again.
    assert sim.total_connections == connections_before + 1
    await sim.wait_for(lambda: sim.connections == 0)


@pytest.mark.usefixtures("no_setup")
async def test_user_keeps_port_and_verify_choice(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """A trailing slash goes, the port stays; verify_ssl is stored as chosen."""
    result = await _submit_user(hass, f"{sim.url}/", verify_ssl=False)

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_URL] == f"http://127.0.0.1:{sim.port}"
    assert result["data"][CONF_VERIFY_SSL] is False


@pytest.mark.usefixtures("no_setup")
async def test_user_duplicate_instance_aborts(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """The authority id identifies the instance, whatever URL reaches it."""
    _entry("https://placeos.example.com").add_to_hass(hass)

    result = await _submit_user(hass, sim.url)

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1


@pytest.mark.parametrize(
    "url",
    [
        "placeos.example.com",
        "ftp://placeos.example.com",
        "ws://placeos.example.com",
        "https://",
        "http://[not-an-address",
        "",
    ],
)
async def test_user_invalid_url(hass: HomeAssistant, url: str) -> None:
    """Only absolute http(s) URLs with a host are accepted; nothing is contacted."""
    result = await _submit_user(hass, url)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_URL: "invalid_url"}


@pytest.mark.usefixtures("no_setup")
async def test_user_errors_keep_input_but_not_key(
    hass: HomeAssistant, sim: PlaceOSSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A rejected key re-shows the form with the URL and TLS choice, never the key."""
    caplog.set_level(logging.DEBUG)
    result = await _submit_user(hass, sim.url, "keyid09.wrong-key", verify_ssl=False)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}
    assert _suggested(result, CONF_URL) == sim.url
    assert _suggested(result, CONF_VERIFY_SSL) is False
    assert _suggested(result, CONF_API_KEY) is None

    # The same flow goes on with a good key.
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: sim.url, CONF_API_KEY: API_KEY, CONF_VERIFY_SSL: False}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert "wrong-key" not in caplog.text
    assert API_KEY not in caplog.text


@pytest.mark.parametrize(
    ("setup_sim", "error"),
    [
        # 401 from the REST API (unknown key) and from the WebSocket handshake.
        (lambda sim: sim.revoke_key(API_KEY), "invalid_auth"),
        (lambda sim: sim.reject_next_handshakes(1, 401), "invalid_auth"),
        # 403: the key lacks the systems/control scope, seen by REST or by the WebSocket.
        (lambda sim: sim.add_key(API_KEY, scopes_ok=False), "forbidden"),
        (lambda sim: sim.reject_next_handshakes(1, 403), "forbidden"),
    ],
    ids=["rest-401", "websocket-401", "rest-403", "websocket-403"],
)
async def test_user_rejected_key(
    hass: HomeAssistant, sim: PlaceOSSimulator, setup_sim: Any, error: str
) -> None:
    """A key that the REST API or the WebSocket rejects is reported on the form."""
    setup_sim(sim)

    result = await _submit_user(hass, sim.url)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": error}
    assert not hass.config_entries.async_entries(DOMAIN)


async def test_user_cannot_connect(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """Nothing listens on the port any more."""
    url = sim.url
    await sim.stop()

    result = await _submit_user(hass, url)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}


async def test_user_timeout(
    hass: HomeAssistant, sim: PlaceOSSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WebSocket opens but never answers the probe's ping."""
    monkeypatch.setattr(config_flow, "VALIDATION_TIMEOUT", 0.2)
    sim.answer_ping = False

    result = await _submit_user(hass, sim.url)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "timeout"}
    await sim.wait_for(lambda: sim.connections == 0)


async def test_user_unexpected_error_is_logged_once(
    hass: HomeAssistant,
    sim: PlaceOSSimulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug (not a PlaceOS error) shows `unknown` and logs the traceback once."""

    async def broken(self: PlaceOSApi) -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(PlaceOSApi, "current_user", broken)

    result = await _submit_user(hass, sim.url)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "unknown"}
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert API_KEY not in caplog.text


async def test_user_tls(hass: HomeAssistant, socket_enabled: None) -> None:
    """A self-signed certificate fails with verification on and works with it off."""
    simulator = PlaceOSSimulator(api_keys=(API_KEY,), ssl_context=self_signed_ssl_context())
    await simulator.start(host="127.0.0.1")
    try:
        assert simulator.url.startswith("https://")
        result = await _submit_user(hass, simulator.url, verify_ssl=True)
        assert result["type"] is FlowResultType.FORM
        assert result["errors"] == {"base": "ssl_error"}

        with (
            patch("custom_components.placeos.async_setup_entry", return_value=True),
            patch("custom_components.placeos.async_unload_entry", return_value=True),
        ):
            result = await hass.config_entries.flow.async_configure(
                result["flow_id"],
                {CONF_URL: simulator.url, CONF_API_KEY: API_KEY, CONF_VERIFY_SSL: False},
            )
        assert result["type"] is FlowResultType.CREATE_ENTRY
        assert result["data"][CONF_VERIFY_SSL] is False
    finally:
        await simulator.stop()


# -------------------------------------------------------------------------------------- reauth


async def test_reauth_after_rejected_key_sets_entry_up(
    hass: HomeAssistant, sim: PlaceOSSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Setup fails on a revoked key -> reauth; a new key is stored and the entry loads.

    The failed setup left no update listener, so the flow schedules the reload itself.
    """
    entry = _entry(sim.url, api_key="keyid00.revoked")
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert len(flows) == 1
    assert flows[0]["context"]["source"] == SOURCE_REAUTH
    flow_id = flows[0]["flow_id"]

    result = await hass.config_entries.flow.async_configure(flow_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_confirm"
    assert result["description_placeholders"][CONF_URL] == sim.url

    # A wrong key is reported on the form.
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_API_KEY: "keyid00.still-wrong"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}
    assert "still-wrong" not in str(result["description_placeholders"])

    result = await hass.config_entries.flow.async_configure(flow_id, {CONF_API_KEY: API_KEY})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()

    assert entry.data[CONF_API_KEY] == API_KEY
    assert entry.data[CONF_URL] == sim.url
    assert entry.state is ConfigEntryState.LOADED
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1
    assert API_KEY not in caplog.text
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_reauth_loaded_entry_reloads_through_update_listener(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """On a loaded entry the runtime's update listener applies the new key."""
    entry = _entry(sim.url)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    old_hub = entry.runtime_data
    sim.add_key(NEW_KEY)

    result = await entry.start_reauth_flow(hass)
    assert result["step_id"] == "reauth_confirm"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_KEY: NEW_KEY}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()

    assert entry.data[CONF_API_KEY] == NEW_KEY
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is not old_hub
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.usefixtures("no_setup")
async def test_reauth_other_instance_aborts(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """A key that works, but the URL now answers as another instance: nothing is stored."""
    entry = _entry(sim.url, api_key="keyid00.old", unique_id="authority-other")
    entry.add_to_hass(hass)

    result = await entry.start_reauth_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_KEY: API_KEY}
    )

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"
    assert entry.data[CONF_API_KEY] == "keyid00.old"


# --------------------------------------------------------------------------------- reconfigure


async def test_reconfigure_keeps_key_when_empty(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """URL and TLS change; an empty key keeps the stored one; the form never shows it."""
    entry = _entry(sim.url)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)

    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    assert _suggested(result, CONF_URL) == sim.url
    assert _suggested(result, CONF_VERIFY_SSL) is True
    assert _suggested(result, CONF_API_KEY) is None

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: f"{sim.url}/some/path", CONF_VERIFY_SSL: False}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()

    assert entry.data == {CONF_URL: sim.url, CONF_API_KEY: API_KEY, CONF_VERIFY_SSL: False}
    assert entry.state is ConfigEntryState.LOADED
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_reconfigure_moves_entry_to_working_url(
    hass: HomeAssistant, sim: PlaceOSSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry stuck retrying on a dead URL gets a new URL and key, and loads.

    The failed setup left no update listener, so the flow schedules the reload itself.
    """
    monkeypatch.setattr(
        hub_module, "CLIENT_TIMINGS", replace(hub_module.CLIENT_TIMINGS, setup_timeout=0.2)
    )
    entry = _entry("http://127.0.0.1:9", api_key="keyid00.old")
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY

    result = await entry.start_reconfigure_flow(hass)
    # The dead URL fails first, then a wrong key, then it works.
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: "http://127.0.0.1:9", CONF_VERIFY_SSL: True}
    )
    assert result["errors"] == {"base": "cannot_connect"}
    assert _suggested(result, CONF_URL) == "http://127.0.0.1:9"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: sim.url, CONF_VERIFY_SSL: True}
    )
    assert result["errors"] == {"base": "invalid_auth"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: sim.url, CONF_API_KEY: API_KEY, CONF_VERIFY_SSL: True}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()

    assert entry.data == {CONF_URL: sim.url, CONF_API_KEY: API_KEY, CONF_VERIFY_SSL: True}
    assert entry.state is ConfigEntryState.LOADED
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.usefixtures("no_setup")
async def test_reconfigure_invalid_url(hass: HomeAssistant) -> None:
    """A bad URL is reported on its field and re-shown as typed."""
    entry = _entry("https://placeos.example.com")
    entry.add_to_hass(hass)

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: "placeos.example.com", CONF_VERIFY_SSL: False}
    )

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_URL: "invalid_url"}
    assert _suggested(result, CONF_URL) == "placeos.example.com"
    assert _suggested(result, CONF_VERIFY_SSL) is False


@pytest.mark.usefixtures("no_setup")
async def test_reconfigure_to_other_instance_aborts(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """The new URL reaches a different PlaceOS instance: the entry is left alone."""
    other = Scenario.demo()
    other.authority["id"] = "authority-other"
    other_sim = PlaceOSSimulator(other, api_keys=(API_KEY,))
    await other_sim.start(host="127.0.0.1")
    try:
        entry = _entry(sim.url)
        entry.add_to_hass(hass)
        result = await entry.start_reconfigure_flow(hass)
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_URL: other_sim.url, CONF_VERIFY_SSL: True}
        )
    finally:
        await other_sim.stop()

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"
    assert entry.data[CONF_URL] == sim.url


# -------------------------------------------------------------------------------- translations


def test_translations_cover_every_flow_string() -> None:
    """Every step, field, error and abort reason the flows use has English text."""
    strings = json.loads(
        (Path(config_flow.__file__).parent / "translations" / "en.json").read_text()
    )
    source = Path(config_flow.__file__).read_text()
    config_part, _, rest = source.partition("class PlaceOSOptionsFlow")
    options_part, _, subentry_part = rest.partition("class SystemSubentryFlow")
    sections = {
        "config": (strings["config"], config_part),
        "options": (strings["options"], options_part),
        "subentry": (strings["config_subentries"]["system"], subentry_part),
    }
    # HA's own helpers end flows with these reasons.
    implicit_aborts = {
        "config": {
            "already_configured",
            "already_in_progress",
            "unique_id_mismatch",
            "reauth_successful",
            "reconfigure_successful",
        },
        "options": set(),
        "subentry": {"reconfigure_successful"},
    }
    for name, (section, code) in sections.items():
        errors = set(re.findall(r'errors\[[^\]]+\] = "(\w+)"', code))
        aborts = set(re.findall(r'reason="(\w+)"', code))
        aborts |= set(re.findall(r'return "(\w+)"', code)) if name == "subentry" else set()
        assert errors <= set(section.get("error", {})), name
        assert aborts | implicit_aborts[name] <= set(section.get("abort", {})), name
        for step_id in re.findall(r'step_id="(\w+)"', code):
            step = section["step"][step_id]
            assert step["title"], (name, step_id)
            assert set(step["data"]) == set(step["data_description"]), (name, step_id)

    steps = strings["config"]["step"]
    for step_id, schema in (
        ("user", config_flow.USER_SCHEMA),
        ("reauth_confirm", config_flow.REAUTH_SCHEMA),
        ("reconfigure", config_flow.RECONFIGURE_SCHEMA),
    ):
        assert {str(key) for key in schema.schema} == set(steps[step_id]["data"]), step_id
    subentry_steps = strings["config_subentries"]["system"]["step"]
    assert {str(key) for key in config_flow.SEARCH_SCHEMA.schema} == set(
        subentry_steps["user"]["data"]
    )
    assert set(subentry_steps["pick_system"]["data"]) == {config_flow.CONF_SYSTEM}
    assert set(subentry_steps["bindings"]["data"]) == {config_flow.CONF_BINDINGS}
    assert {str(key) for key in config_flow.OPTIONS_SCHEMA.schema} == set(
        strings["options"]["step"]["init"]["data"]
    )
    assert set(strings["selector"]["value_decoding"]["options"]) == {"auto", "raw"}
    assert strings["config_subentries"]["system"]["initiate_flow"]["user"] == "Add system"
    assert strings["config_subentries"]["system"]["entry_type"] == "System"
