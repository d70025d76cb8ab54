"""The benchmarks stay runnable, and the fast paths they demanded stay exact.

Part 1 runs every benchmark of `benchmarks/` at a tiny size (no timing assertions): each one
checks itself that every notify became a state write, that counts and final values match, and
raises otherwise; a test below shows that check catching a dropped value.

Part 2 pins the fast paths to the behaviour of the plain code they shortcut: the client's
orjson decoding of notifies against `json.loads`, `state_from_value`'s type dispatch against
the generic mapping, and the hub's batched application of notifies (every value written, in
order, before any change of connection state).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from enum import IntEnum
import json
from typing import Any, cast

import aiohttp
from homeassistant.config_entries import ConfigSubentryData
from homeassistant.const import EVENT_STATE_CHANGED
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from hypothesis import given, settings, strategies as st
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from benchmarks import latency, memory, recovery, startup, throughput
from benchmarks.__main__ import QUICK, main, parse_args
from benchmarks.simproc import SimProcess
from custom_components.placeos import hub as hub_module
from custom_components.placeos.client import BindingKey, ConnectionState, PlaceOSWebSocket
from custom_components.placeos.const import (
    CONF_API_KEY,
    CONF_BINDINGS,
    CONF_SYS,
    CONF_SYSTEM_NAME,
    CONF_URL,
    CONF_VERIFY_SSL,
    DOMAIN,
    MAX_STATE_LENGTH,
    SUBENTRY_TYPE_SYSTEM,
)
from custom_components.placeos.hub import PlaceOSHub
from custom_components.placeos.sensor import compact_json, state_from_value
from placeos_sim import PlaceOSSimulator

# ---------------------------------------------------------------------------- part 1


@pytest.fixture
def quick_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Millisecond backoff, so the recovery benchmark does not wait a second per outage."""
    monkeypatch.setattr(
        hub_module,
        "CLIENT_TIMINGS",
        replace(hub_module.CLIENT_TIMINGS, backoff_min=0.01, backoff_max=0.02),
    )


@pytest.fixture
async def sim(socket_enabled: None) -> Any:
    """The simulator in its own process, as the benchmarks run it."""
    async with SimProcess() as process:
        yield process


async def test_throughput_every_notify_is_a_state_write(sim: SimProcess) -> None:
    """Raw, client, full path and HA alone run; the full path wrote every notify."""
    from benchmarks.harness import home_assistant

    async with home_assistant() as hass:
        figure = await throughput.run(hass, sim, bindings=3, per_key=4, rounds=2)
    assert {"raw", "client", "full", "ha", "ha_path_efficiency"} <= set(figure.data)
    assert all(seconds > 0 for seconds in figure.data.values())
    assert "client_vs_raw=" in figure.line
    assert "ha_path_efficiency=" in figure.line
    assert len(figure.rows) == 2


async def test_throughput_detects_a_dropped_value(
    sim: SimProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub that loses a single notify fails the benchmark instead of flattering it."""
    from benchmarks.harness import home_assistant

    original = PlaceOSHub._async_on_notify

    def lossy(self: PlaceOSHub, key: BindingKey, value: Any) -> None:
        if value != 1_000_003:  # the fourth value of each binding in the first round
            original(self, key, value)

    monkeypatch.setattr(PlaceOSHub, "_async_on_notify", lossy)
    monkeypatch.setattr(throughput, "IDLE", 0.1)
    async with home_assistant() as hass:
        with pytest.raises(RuntimeError, match="18 state writes for 20 notifies"):
            await throughput.run(hass, sim, bindings=2, per_key=10, rounds=1)


async def test_startup_memory_latency_recovery(sim: SimProcess, quick_reconnect: None) -> None:
    """The other four figures run at tiny sizes and report what they measured."""
    from benchmarks.harness import home_assistant

    figure = await startup.run(sim, sizes=(3, 6), rounds=1, server_latency=0.002)
    assert figure.data["ready_6"] > 0
    assert figure.data["ready_1by1_6"] > 0
    assert figure.data["bind_1by1_3"] > 0
    assert figure.data["ready_1by1_latency_6"] > 0
    assert len(figure.rows) == 4  # one per size, the per-binding growth, the latency run

    figure = await memory.run(sim, count=5)
    assert figure.data["per_binding"] > 0
    assert figure.data["per_plain"] > 0

    async with home_assistant() as hass:
        figure = await latency.run(hass, sim, bindings=3, rate=400, seconds=0.02, rounds=1)
        assert 0 < figure.data["p50"] <= figure.data["p99"] <= figure.data["max"]

        figure = await recovery.run(hass, sim, count=4, rounds=1)
    assert figure.data["resync"] > 0
    assert figure.data["total"] >= figure.data["resync"]


async def test_command_line_quick_run(
    socket_enabled: None,
    quick_reconnect: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    """`python -m benchmarks --quick` prints a line per figure and the markdown table."""
    import benchmarks.__main__ as cli

    tiny = replace(
        QUICK,
        bindings=2,
        per_key=3,
        startup_sizes=(2,),
        latency_seconds=0.02,
        memory_count=3,
        recovery_count=2,
    )
    monkeypatch.setattr(cli, "QUICK", tiny)
    results = tmp_path / "results.md"
    assert await main(parse_args(["--quick", "--results", str(results)])) == 0
    out = capsys.readouterr().out
    for name in ("notify_throughput", "bind_startup", "latency", "memory", "recovery"):
        assert f"\n{name}  " in out or f"\n{name} " in out
    assert "| Figure | Measured |" in out
    assert results.read_text(encoding="utf-8").startswith("# Benchmark results")


async def test_command_line_rejects_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in --only is an error, not a silently empty run."""
    assert await main(parse_args(["--only", "throughput,speed"])) == 2
    assert "speed" in capsys.readouterr().out


# ---------------------------------------------------------------------------- part 2

KEY = BindingKey("sys-1", "Display", 1, "power")
# The frames below are fed to the client directly: it never connects, so needs no session.
NO_SESSION = cast(aiohttp.ClientSession, object())

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([9.3e18, -9.3e18, 1e19, 2.0**63, -(2.0**63), 1e308])
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", "x\udfff", "42", "[1]", "NaN", "1e400", "true"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)


def _frames(value: Any, *, index: Any = 1) -> Iterator[str]:
    """A notify carrying `value`, as JSON text in the ways a server may write it."""
    frame = {"id": 3, "type": "notify", "value": value, "meta": {**KEY._asdict(), "index": index}}
    yield json.dumps(frame)
    yield json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def _delivered(text: str, decoding: str) -> list[Any]:
    """What the client passes to the binding's callback for one frame."""
    received: list[Any] = []
    client = PlaceOSWebSocket(NO_SESSION, "http://127.0.0.1:1", "key", value_decoding=decoding)
    client.add_bindings({KEY: lambda _key, value: received.append(value)})
    client._on_text(text)
    return received


def _expected(text: str, decoding: str) -> list[Any]:
    """The standard library's reading of the frame, with the documented value decoding."""
    from custom_components.placeos.client import decode_value

    frame = json.loads(text)
    meta = frame["meta"]
    if (meta["sys"], meta["mod"], meta["index"], meta["name"]) != tuple(KEY):
        return []
    return [decode_value(frame.get("value"), decoding)]


@settings(max_examples=300, deadline=None)
@given(value=json_values, decoding=st.sampled_from(["auto", "raw"]))
def test_fast_notify_decoding_equals_json_loads(value: Any, decoding: str) -> None:
    """Whatever the value, the callback gets exactly what `json.loads` would have given."""
    for text in _frames(value):
        assert repr(_delivered(text, decoding)) == repr(_expected(text, decoding)), text


@pytest.mark.parametrize(
    "text",
    [
        '{"id":1,"type":"notify","value":18446744073709551616,'
        '"meta":{"sys":"sys-1","mod":"Display","index":1,"name":"power"}}',
        '{"id":1,"type":"notify","value":-9223372036854775809,'
        '"meta":{"sys":"sys-1","mod":"Display","index":1,"name":"power"}}',
        '{"id":1,"type":"notify","value":[1,123456789012345678901234567890],'
        '"meta":{"sys":"sys-1","mod":"Display","index":1,"name":"power"}}',
        '{"id":1,"type":"notify","value":1e400,'
        '"meta":{"sys":"sys-1","mod":"Display","index":1,"name":"power"}}',
        '{"id":1,"type":"notify","value":NaN,'
        '"meta":{"sys":"sys-1","mod":"Display","index":1,"name":"power"}}',
        '{"id":1,"type":"notify","value":"\\ud800",'
        '"meta":{"sys":"sys-1","mod":"Display","index":1,"name":"power"}}',
        '{"id":1,"type":"notify","value":1.0,'
        '"meta":{"sys":"sys-1","mod":"Display","index":1.0,"name":"power"}}',
        '{"id":1,"type":"notify","value":2,'
        '"meta":{"sys":"sys-1","mod":"Display","index":18446744073709551617,"name":"power"}}',
        '{"id":-99999999999999999999,"type":"notify","value":3,'
        '"meta":{"sys":"sys-1","mod":"Display","index":1,"name":"power"}}',
    ],
    ids=[
        "2^64",
        "-2^63-1",
        "nested-bigint",
        "1e400",
        "NaN",
        "surrogate",
        "float-index",
        "big-index",
        "big-negative-id",
    ],
)
def test_frames_orjson_reads_differently_take_the_exact_path(text: str) -> None:
    """Each way orjson differs from the standard library ends in json.loads's result."""
    assert repr(_delivered(text, "raw")) == repr(_expected(text, "raw"))


def test_structured_values_skip_the_second_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A list or object is taken from orjson unless the frame may hold a > 64-bit integer."""
    from custom_components.placeos.client import websocket

    exact_decodings: list[str] = []

    def counting_loads(text: str) -> Any:
        exact_decodings.append(text)
        return json.loads(text)

    monkeypatch.setattr(websocket, "_json_loads", counting_loads)
    meta = json.dumps(KEY._asdict())
    plain = f'{{"id":1,"type":"notify","value":[1,{{"a":"b"}}],"meta":{meta}}}'
    assert _delivered(plain, "raw") == [[1, {"a": "b"}]]
    assert exact_decodings == []
    nested_big = f'{{"id":1,"type":"notify","value":[-9223372036854775809],"meta":{meta}}}'
    assert repr(_delivered(nested_big, "raw")) == "[[-9223372036854775809]]"
    assert exact_decodings == [nested_big]


def test_malformed_and_unrouted_notifies_are_still_counted() -> None:
    """The fast path leaves frames it does not route to the exact path and its counters."""
    client = PlaceOSWebSocket(NO_SESSION, "http://127.0.0.1:1", "key")
    client.add_bindings({KEY: lambda _key, _value: None})
    meta = KEY._asdict()
    client._on_text(json.dumps({"type": "notify", "value": 1, "meta": {**meta, "name": "x"}}))
    client._on_text(json.dumps({"type": "notify", "value": 1, "meta": {**meta, "sys": [1]}}))
    client._on_text(json.dumps({"type": "notify", "value": 1, "meta": {"index": 1}}))
    client._on_text(json.dumps({"type": "notify", "value": 1, "meta": meta}))
    counters = client.diagnostics()
    assert counters["notifies"] == 1
    assert counters["notifies_unrouted"] == 1
    assert counters["frames_ignored"] == 2


def _reference_state(value: Any) -> Any:
    """`state_from_value` as it was before its fast paths (the documented mapping)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = str(value)
        return value if len(text) <= MAX_STATE_LENGTH else text[:MAX_STATE_LENGTH]
    if isinstance(value, str):
        return value[:MAX_STATE_LENGTH]
    return compact_json(value, MAX_STATE_LENGTH)


class _Level(IntEnum):
    HIGH = 3


class _Text(str):
    __slots__ = ()


class _Real(float):
    __slots__ = ()


@pytest.mark.parametrize(
    "value",
    [_Level.HIGH, _Text("hdmi"), _Text("x" * 300), _Real(1.5), 10**300, -(10**254), True, None],
)
def test_state_of_subclasses_and_huge_numbers(value: Any) -> None:
    """Values the fast paths do not take (subclasses, huge integers) map as before."""
    assert repr(state_from_value(value)) == repr(_reference_state(value))


@settings(max_examples=300, deadline=None)
@given(
    value=json_values
    | st.integers(min_value=-(10**256), max_value=10**256)
    | st.sampled_from([10**255 - 1, 10**255, -(10**254) + 1, -(10**254), 10**300, -(10**300)])
    | st.text(min_size=250, max_size=260)
)
def test_state_fast_paths_equal_the_generic_mapping(value: Any) -> None:
    """Type dispatch gives the same state, of the same type, as the isinstance chain."""
    assert repr(state_from_value(value)) == repr(_reference_state(value))


# -- the hub applies the notifies of one socket read together -----------------------------

ROOM = "sys-room101"


@pytest.fixture
async def room_volume(
    hass: HomeAssistant, socket_enabled: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[PlaceOSSimulator, PlaceOSHub, str]]:
    """The demo building in this process, an entry with `Display_1.volume`, its entity id."""
    monkeypatch.setattr(
        hub_module,
        "CLIENT_TIMINGS",
        replace(hub_module.CLIENT_TIMINGS, setup_timeout=5.0, backoff_min=0.01, backoff_max=0.02),
    )
    simulator = PlaceOSSimulator(api_keys=("key-1.secret",))
    await simulator.start()
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id="authority-smoke",
        data={CONF_URL: simulator.url, CONF_API_KEY: "key-1.secret", CONF_VERIFY_SSL: True},
        subentries_data=[
            ConfigSubentryData(
                data={
                    CONF_SYS: ROOM,
                    CONF_SYSTEM_NAME: "Boardroom",
                    CONF_BINDINGS: [{"mod": "Display", "index": 1, "name": "volume"}],
                },
                subentry_type=SUBENTRY_TYPE_SYSTEM,
                title="Boardroom",
                unique_id=ROOM,
            )
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    entity = er.async_get(hass).async_get_entity_id(
        "sensor", DOMAIN, f"authority-smoke_{ROOM}_Display_1_volume"
    )
    assert entity is not None
    yield simulator, entry.runtime_data, entity
    await hass.config_entries.async_unload(entry.entry_id)
    await simulator.stop()


def _record(hass: HomeAssistant, entity: str) -> list[str]:
    states: list[str] = []

    @callback
    def on_change(event: Event[EventStateChangedData]) -> None:
        if event.data["entity_id"] == entity and (new := event.data["new_state"]) is not None:
            states.append(new.state)

    hass.bus.async_listen(EVENT_STATE_CHANGED, on_change)
    return states


async def test_burst_in_one_read_writes_every_value_in_order(
    hass: HomeAssistant, room_volume: tuple[PlaceOSSimulator, PlaceOSHub, str]
) -> None:
    """Fifty notifies written to the socket at once: fifty state writes, in order."""
    simulator, _hub, entity = room_volume
    states = _record(hass, entity)
    await simulator.burst(ROOM, "Display", 1, "volume", range(100, 150))
    async with asyncio.timeout(5):
        while len(states) < 50:  # noqa: ASYNC110 - the values cross a real socket
            await asyncio.sleep(0.002)
    await asyncio.sleep(0.01)
    assert states == [str(value) for value in range(100, 150)]


async def test_pending_notifies_are_applied_before_a_state_change(
    hass: HomeAssistant, room_volume: tuple[PlaceOSSimulator, PlaceOSHub, str]
) -> None:
    """Notifies taken just before the connection drops are written before `unavailable`."""
    _simulator, hub, entity = room_volume
    key = BindingKey(ROOM, "Display", 1, "volume")
    states = _record(hass, entity)
    hub._async_on_notify(key, 7)
    hub._async_on_notify(key, 8)
    assert states == []  # applied once the current read is done...
    hub._async_on_state(ConnectionState.DISCONNECTED, None)  # ...or before anything else
    assert states == ["7", "8", "unavailable"]
    assert hub.values[key] == 8


async def test_pending_notifies_are_applied_on_close(
    hass: HomeAssistant, room_volume: tuple[PlaceOSSimulator, PlaceOSHub, str]
) -> None:
    """Closing the hub applies what it took; nothing is scheduled after it."""
    _simulator, hub, entity = room_volume
    key = BindingKey(ROOM, "Display", 1, "volume")
    states = _record(hass, entity)
    hub._async_on_notify(key, 9)
    await hub.async_close()
    assert states == ["9"]
    assert hub.values[key] == 9
    assert hub._flush_handle is None


async def test_a_failing_listener_does_not_stop_the_others(
    hass: HomeAssistant,
    room_volume: tuple[PlaceOSSimulator, PlaceOSHub, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An entity update that raises is logged; the notifies after it are still applied."""
    _simulator, hub, _entity = room_volume
    key = BindingKey(ROOM, "Display", 1, "volume")
    calls: list[Any] = []

    def failing() -> None:
        calls.append(hub.values[key])
        raise RuntimeError("broken entity")

    remove = hub.async_add_binding_listener(key, failing)
    hub._async_on_notify(key, 1)
    hub._async_on_notify(key, 2)
    hub._async_flush_notifies()
    remove()
    assert calls == [1, 2]
    assert caplog.text.count("Updating the entity of PlaceOS binding Display_1.volume") == 2
