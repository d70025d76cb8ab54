"""Security checks through public surfaces: secrets, TLS, URLs, exec input, huge values.

- The API key never shows up in any log record at DEBUG level (message or traceback), in
  exception texts raised to action callers, in diagnostics, in state attributes or in the reprs
  of the client and the hub, across a campaign of every fault kind including key rotation.
  The integration authenticates with API keys only (`X-API-Key`); bearer tokens are not
  supported, so there is no token to check.
- TLS verification is on by default, and a certificate error is reported as a TLS error.
- Only http and https URLs are accepted, and a rejected URL is never contacted.
- `placeos.exec` data cannot add keys to the protocol request.
- A 5 MB value keeps the state within HA's 255 characters, keeps the full value in the `value`
  attribute, and neither blocks nor stalls the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
import json
import logging
import re
import time
from typing import Any

import aiohttp
from homeassistant import block_async_io
from homeassistant.config_entries import SOURCE_RECONFIGURE, SOURCE_USER, ConfigEntryState
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers.aiohttp_client import async_get_clientsession
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.placeos import hub as hub_module
from custom_components.placeos.client import (
    PlaceOSApi,
    PlaceOSTLSError,
    PlaceOSWebSocket,
)
from custom_components.placeos.const import (
    CONF_API_KEY,
    CONF_URL,
    CONF_VERIFY_SSL,
    DEFAULT_VERIFY_SSL,
    DOMAIN,
    MAX_STATE_LENGTH,
    SERVICE_EXEC,
)
from custom_components.placeos.diagnostics import async_get_config_entry_diagnostics
from custom_components.placeos.hub import PlaceOSHub
from placeos_sim import PlaceOSSimulator
from placeos_sim.tls import self_signed_ssl_context

from .ha.conftest import (
    FAST_TIMINGS,
    ROOM,
    entity_id,
    make_entry,
    setup_entry,
    state_of,
    system_subentry,
    wait_until,
)
from .reliability.campaign import CAMPAIGN_TIMINGS, FAULT_KINDS, FIRST_KEY, Campaign

KEY = FIRST_KEY  # distinctive: "key-id-4242.s3cr3t-Xq9Lr2Vw8Zt5"
_FORMATTER = logging.Formatter()


@pytest.fixture(autouse=True)
def fast_client_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The campaign's tiny client timings."""
    monkeypatch.setattr(hub_module, "CLIENT_TIMINGS", CAMPAIGN_TIMINGS)


@pytest.fixture
async def sim(socket_enabled: None) -> AsyncIterator[PlaceOSSimulator]:
    """The demo building on 127.0.0.1, accepting KEY."""
    simulator = PlaceOSSimulator(api_keys=(KEY,))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def tls_sim(socket_enabled: None) -> AsyncIterator[PlaceOSSimulator]:
    """The demo building behind a self-signed certificate."""
    simulator = PlaceOSSimulator(api_keys=(KEY,), ssl_context=self_signed_ssl_context())
    await simulator.start()
    yield simulator
    await simulator.stop()


def _record_text(record: logging.LogRecord) -> str:
    """Everything a log handler could write for a record: message, traceback, stack."""
    parts = [record.getMessage()]
    if record.exc_info:
        parts.append(_FORMATTER.formatException(record.exc_info))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


def _exception_texts(err: BaseException) -> Iterator[str]:
    """str and repr of an exception and of every exception it was raised from."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield from (str(arg) for arg in current.args)
        if isinstance(current, HomeAssistantError):
            yield json.dumps(current.translation_placeholders or {})
        current = current.__cause__ or current.__context__


# ------------------------------------------------------------------------------------ secrets


async def test_secrets_never_leak_across_a_campaign(
    caplog: pytest.LogCaptureFixture, hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """Every fault kind once (including a revoked key replaced through reauth), at DEBUG.

    `caplog` comes before `hass`, so HA starts with DEBUG logging and its event bus logs
    every state change (attributes included) as well.
    """
    caplog.set_level(logging.DEBUG)
    surfaces: dict[str, str] = {}

    async def collect_surfaces() -> None:
        entry = hass.config_entries.async_entries(DOMAIN)[0]
        hub: PlaceOSHub = entry.runtime_data
        diagnostics = await async_get_config_entry_diagnostics(hass, entry)
        surfaces["diagnostics"] = json.dumps(diagnostics, default=str)
        surfaces["states"] = json.dumps(
            [(s.entity_id, s.state, dict(s.attributes)) for s in hass.states.async_all()],
            default=str,
        )
        surfaces["reprs"] = " ".join(
            (repr(hub), repr(hub.client), repr(hub.diagnostics()), repr(hub.client.diagnostics()))
        )
        surfaces["entry"] = f"{entry.title} {entry.reason} {entry.error_reason_translation_key}"

    campaign = Campaign(
        hass,
        sim,
        faults=len(FAULT_KINDS),
        seed=4242,
        before_unload=collect_surfaces,
        keep_exec_errors=True,
        keep_pytest_logs=True,
    )
    summary = await campaign.run()
    assert summary.recovered == summary.faults, summary.report(4242)
    secrets = campaign.secrets
    assert len(secrets) >= 3  # the first key, the admin key, at least one rotated key

    # DEBUG really was on, for the integration and the libraries below it.
    debug_names = {r.name for r in caplog.records if r.levelno == logging.DEBUG}
    assert {"custom_components.placeos.client.websocket", "placeos_sim.server"} <= debug_names
    for record in caplog.records:
        text = _record_text(record)
        assert not any(secret in text for secret in secrets), f"{record.name}: {text[:500]}"
    assert campaign.collector.leaks == []
    assert campaign.exec_errors  # the campaign's exec faults raised errors to the caller
    for error in campaign.exec_errors:
        for text in _exception_texts(error):
            assert not any(secret in text for secret in secrets), text
    assert set(surfaces) == {"diagnostics", "states", "reprs", "entry"}
    for name, text in surfaces.items():
        assert not any(secret in text for secret in secrets), f"{name}: {text[:500]}"
    assert '"api_key": "**REDACTED**"' in surfaces["diagnostics"]


# ---------------------------------------------------------------------------------------- TLS


async def test_tls_verification_is_on_by_default_and_reported_as_such(
    hass: HomeAssistant, tls_sim: PlaceOSSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defaults verify certificates; a self-signed one fails as a TLS error everywhere."""
    monkeypatch.setattr(hub_module, "CLIENT_TIMINGS", replace(CAMPAIGN_TIMINGS, setup_timeout=0.3))
    assert DEFAULT_VERIFY_SSL is True
    session = async_get_clientsession(hass)

    # The client, as a library, with no TLS argument at all.
    with pytest.raises(PlaceOSTLSError) as ws_error:
        await PlaceOSWebSocket(session, tls_sim.url, KEY).probe(timeout=5)
    with pytest.raises(PlaceOSTLSError) as rest_error:
        await PlaceOSApi(session, tls_sim.url, KEY).authority()
    for err in (ws_error.value, rest_error.value):
        assert "certificate" in str(err).lower()
        assert KEY not in str(err)

    # The config flow: the form defaults to verifying, and says "ssl_error", not "cannot
    # connect", when the certificate is not trusted.
    form = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    verify_marker = next(m for m in form["data_schema"].schema if m == CONF_VERIFY_SSL)
    assert verify_marker.default() is True
    result = await hass.config_entries.flow.async_configure(
        form["flow_id"], {CONF_URL: tls_sim.url, CONF_API_KEY: KEY}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "ssl_error"}

    # An entry stored without the option verifies too, and says why it cannot connect.
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id="authority-tls",
        data={CONF_URL: tls_sim.url, CONF_API_KEY: KEY},  # no CONF_VERIFY_SSL
        subentries_data=[system_subentry()],
    )
    assert not await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert "TLS error" in (entry.reason or "")
    assert "certificate" in (entry.reason or "").lower()
    assert KEY not in (entry.reason or "")
    assert tls_sim.total_connections == 0  # no handshake ever completed


# --------------------------------------------------------------------------------------- URLs

BAD_URLS = (
    "ftp://127.0.0.1:{port}",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "ws://127.0.0.1:{port}",
    "wss://127.0.0.1:{port}",
    "gopher://127.0.0.1:{port}/",
    "127.0.0.1:{port}",
    "//127.0.0.1:{port}",
    "http://",
    "https:///path-only",
    " data:text/html,hello",
)


async def test_only_http_and_https_urls_are_accepted(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """The user and reconfigure steps reject other schemes before contacting anything."""
    entry = make_entry(sim, api_key=KEY)
    entry.add_to_hass(hass)
    before = (sim.rest_requests, sim.total_connections, sim.handshakes_rejected)
    for template in BAD_URLS:
        url = template.format(port=sim.port)
        form = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
        result = await hass.config_entries.flow.async_configure(
            form["flow_id"], {CONF_URL: url, CONF_API_KEY: KEY, CONF_VERIFY_SSL: True}
        )
        assert result["errors"] == {CONF_URL: "invalid_url"}, url
        hass.config_entries.flow.async_abort(form["flow_id"])

        form = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_RECONFIGURE, "entry_id": entry.entry_id}
        )
        result = await hass.config_entries.flow.async_configure(
            form["flow_id"], {CONF_URL: url, CONF_VERIFY_SSL: True}
        )
        assert result["errors"] == {CONF_URL: "invalid_url"}, url
        hass.config_entries.flow.async_abort(form["flow_id"])
    assert (sim.rest_requests, sim.total_connections, sim.handshakes_rejected) == before
    assert entry.data[CONF_URL] == sim.url


# ------------------------------------------------------------------------------ exec requests


async def _exec(hass: HomeAssistant, **data: Any) -> Any:
    return await hass.services.async_call(
        DOMAIN, SERVICE_EXEC, data, blocking=True, return_response=True
    )


async def test_exec_data_cannot_add_keys_to_the_protocol_request(
    hass: HomeAssistant, sim: PlaceOSSimulator
) -> None:
    """Extra fields are refused; strings and arguments stay inside their own fields.

    The simulator parses requests as strictly as the real server (an unknown key makes it
    ignore the frame), so an answered exec proves the request had no extra key.
    """
    sim.set_method(ROOM, "Display", 1, "echo", lambda *args: list(args))
    entry = make_entry(sim, [system_subentry()], api_key=KEY)
    assert await setup_entry(hass, entry)
    counters = (sim.bind_requests, sim.unbind_requests, sim.debug_requests, sim.exec_requests)

    for extra in (
        {"id": 1},
        {"cmd": "bind"},
        {"meta": {"sys": ROOM}},
        {"request": {"cmd": "unbind"}},
        {"api_key": "x"},
    ):
        with pytest.raises(ServiceValidationError) as err:
            await _exec(hass, sys=ROOM, mod="Display", name="echo", **extra)
        assert err.value.translation_key == "invalid_action_data"
    for index in ('1, "cmd": "bind"', "1e3", -1, True, [1]):
        with pytest.raises(ServiceValidationError):
            await _exec(hass, sys=ROOM, mod="Display", index=index, name="echo")
    assert (
        sim.bind_requests,
        sim.unbind_requests,
        sim.debug_requests,
        sim.exec_requests,
    ) == counters

    # Protocol-looking arguments are arguments.
    smuggled = {"cmd": "bind", "id": 1, "sys": ROOM, "mod": "Display", "name": "power"}
    response = await _exec(hass, sys=ROOM, mod="Display", name="echo", args=[smuggled, "x"])
    assert response == {"value": [smuggled, "x"]}
    request = sim.requests[-1]
    assert (request.cmd, request.name, request.args) == ("exec", "echo", [smuggled, "x"])

    # JSON in the strings stays a string: the server looks for a method of that odd name.
    odd_name = 'echo", "cmd": "bind", "x": "'
    with pytest.raises(HomeAssistantError) as err:
        await _exec(hass, sys=ROOM, mod="Display", name=odd_name)
    assert err.value.translation_key == "function_not_found"
    assert (sim.requests[-1].cmd, sim.requests[-1].name) == ("exec", odd_name)
    odd_mod = 'Display", "index": 2, "cmd": "unbind'
    with pytest.raises(HomeAssistantError) as err:
        await _exec(hass, sys=ROOM, mod=odd_mod, name="echo")
    assert err.value.translation_key == "module_not_found"
    assert (sim.requests[-1].cmd, sim.requests[-1].mod, sim.requests[-1].index) == (
        "exec",
        odd_mod,
        1,
    )
    assert (sim.bind_requests, sim.unbind_requests, sim.debug_requests) == counters[:3]
    assert sim.frames_ignored == 0  # every frame the client sent parsed strictly


# -------------------------------------------------------------------------------- huge values

_SLOW = re.compile(r"Executing (?P<handle>.*) took (?P<seconds>[0-9.]+) seconds", re.DOTALL)


async def test_huge_value_stays_within_state_limits_without_blocking_the_loop(
    hass: HomeAssistant,
    sim: PlaceOSSimulator,
    caplog: pytest.LogCaptureFixture,
    disable_block_async_io: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 5 MB structured value: state <= 255 characters, full value in the attribute, no
    blocking call, and no step of the integration's reader that takes much longer than
    decoding the frame itself (asyncio's slow-callback report, measured against a
    `json.loads` of the same frame on the same machine right before).

    The simulator shares the event loop: while it encodes 5 MB nothing answers pings, so the
    liveness window here is the ordinary test one (seconds), not the campaign's 0.6 s.
    """
    monkeypatch.setattr(hub_module, "CLIENT_TIMINGS", FAST_TIMINGS)
    entry = make_entry(sim, [system_subentry(labels=["Bookings_1.bookings"])], api_key=KEY)
    assert await setup_entry(hass, entry)
    entity = entity_id(hass, "Bookings_1.bookings")

    huge = [
        {"id": f"evt-{n}", "title": f"Meeting {n} " + "é" * 20, "attendees": [n, n + 1]}
        for n in range(60_000)
    ]
    frame = json.dumps(
        {
            "id": 1,
            "type": "notify",
            "value": huge,
            "meta": {"sys": ROOM, "mod": "Bookings", "index": 1, "name": "bookings"},
        },
        ensure_ascii=False,
    )
    assert len(frame.encode()) >= 5_000_000
    reference = min(_time(lambda: json.loads(frame)) for _ in range(3))

    loop = asyncio.get_running_loop()
    block_async_io.enable()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.02
    try:
        caplog.set_level(logging.WARNING, logger="asyncio")
        sim.set_status(ROOM, "Bookings", 1, "bookings", huge)
        await wait_until(
            lambda: (
                len(state_of(hass, "Bookings_1.bookings").attributes.get("value") or ())
                == len(huge)
            ),
            timeout=30,
        )
    finally:
        loop.set_debug(False)
    state = state_of(hass, "Bookings_1.bookings")
    assert state.state != STATE_UNAVAILABLE
    assert 0 < len(state.state) <= MAX_STATE_LENGTH
    assert state.state == json.dumps(huge, ensure_ascii=False, separators=(",", ":"))[:255]
    assert state.attributes["value"] == huge
    assert hass.states.get(entity) is state

    assert "Detected blocking call" not in caplog.text
    ours = [
        float(match["seconds"])
        for record in caplog.records
        if record.name == "asyncio"
        and (match := _SLOW.search(record.getMessage())) is not None
        and "placeos-reader" in match["handle"]
    ]
    # The reader's step decodes the frame, maps it to a state and writes it: a few decodes'
    # worth at most. Serialising the whole value, or anything quadratic, would be far more.
    budget = max(0.25, 5 * reference)
    assert max(ours, default=0.0) <= budget, (ours, reference)


def _time(func: Any) -> float:
    began = time.perf_counter()
    func()
    return time.perf_counter() - began


async def test_rejected_urls_never_reach_the_client() -> None:
    """The client itself refuses non-http(s) URLs, whatever stored data may say."""
    async with aiohttp.ClientSession() as session:
        for url in ("ftp://127.0.0.1:1", "file:///etc/passwd", "javascript:alert(1)", "x"):
            with pytest.raises(ValueError, match=r"https://placeos\.example\.com"):
                PlaceOSWebSocket(session, url, KEY)
            with pytest.raises(ValueError):
                PlaceOSApi(session, url, KEY)
