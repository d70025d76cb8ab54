"""PlaceOSWebSocket against the simulator over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Any

import aiohttp
import pytest

from custom_components.placeos.client import (
    BindingKey,
    ConnectionState,
    PlaceOSAuthError,
    PlaceOSCommandError,
    PlaceOSConnectionError,
    PlaceOSForbiddenError,
    PlaceOSNotConnectedError,
    PlaceOSTimeoutError,
    PlaceOSWebSocket,
)
from placeos_sim import DriverError, PlaceOSSimulator, UnexpectedFailure

from .conftest import (
    API_KEY,
    BOOKINGS,
    FAST,
    FIRMWARE,
    INPUT,
    POWER,
    VOLUME,
    Factory,
    until,
)

CONNECTED = ConnectionState.CONNECTED
SYNCING = ConnectionState.SYNCING
CONNECTING = ConnectionState.CONNECTING
DISCONNECTED = ConnectionState.DISCONNECTED

# ============================================================================ connect and bind


async def test_connect_binds_pipelined_and_gets_initial_values(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """Every binding is sent at once; the initial notifies deliver the current values."""
    harness = make_client()
    harness.bind(POWER, VOLUME, INPUT, BOOKINGS)
    assert harness.client.state is DISCONNECTED
    assert not harness.client.connected
    await harness.connected()
    assert harness.client.connected
    assert harness.state_names() == [CONNECTING, SYNCING, CONNECTED]
    assert all(reason is None for _, reason in harness.states)
    await until(lambda: len(harness.values) == 4)
    assert harness.values[POWER] == [True]
    assert harness.values[VOLUME] == [30]
    assert harness.values[INPUT] == ["hdmi"]
    assert [booking["id"] for booking in harness.last(BOOKINGS)] == ["evt-1", "evt-2"]
    assert sim.bind_requests == 4
    ids = [request.id for request in sim.requests]
    assert len(set(ids)) == 4  # unique integer ids
    assert all(type(ident) is int for ident in ids)
    assert harness.client.bindings == dict.fromkeys(
        (POWER, VOLUME, INPUT, BOOKINGS), harness.record
    )


async def test_changes_reach_only_their_own_callback(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """A notify calls the one callback registered for its meta, nothing else."""
    harness = make_client()
    calls: list[tuple[str, BindingKey, Any]] = []
    harness.client.add_bindings(
        {
            POWER: lambda key, value: calls.append(("power", key, value)),
            VOLUME: lambda key, value: calls.append(("volume", key, value)),
        }
    )
    await harness.connected()
    await until(lambda: len(calls) == 2)
    calls.clear()
    await sim.set_status("sys-room101", "Display", 1, "volume", 55)
    await sim.set_status("sys-room101", "Display", 1, "volume", 56)
    await until(lambda: len(calls) == 2)
    assert calls == [("volume", VOLUME, 55), ("volume", VOLUME, 56)]
    assert type(calls[0][1]) is BindingKey


async def test_deleted_status_notifies_none(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """A deleted status arrives as `null` (the field omitted): the callback gets None."""
    harness = make_client()
    harness.bind(INPUT)
    await harness.connected()
    await until(lambda: harness.has(INPUT, "hdmi"))
    await sim.delete_status("sys-room101", "Display", 1, "input")
    await until(lambda: harness.values[INPUT] == ["hdmi", None])


async def test_binding_to_something_that_appears_later(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """Bind succeeds for unknown targets; values flow once the status exists."""
    later = BindingKey("sys-room101", "Camera", 1, "zoom")
    harness = make_client()
    harness.bind(later)
    await harness.connected()
    assert later not in harness.values
    await sim.set_status("sys-room101", "Camera", 1, "zoom", 3)
    await until(lambda: harness.has(later, 3))


async def test_notify_before_success(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """The initial notify may precede the bind's success: it is routed all the same."""
    sim.notify_before_success = True
    harness = make_client()
    harness.bind(POWER, VOLUME)
    await harness.connected()
    await until(lambda: harness.has(POWER, True) and harness.has(VOLUME, 30))
    assert harness.client.diagnostics()["notifies_unrouted"] == 0


async def test_out_of_order_replies(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """Replies are matched by id whatever order they come in."""
    sim.out_of_order = True
    sim.set_method("sys-room101", "Display", 1, "echo", lambda value: {"echo": value})
    harness = make_client()
    harness.bind(POWER, VOLUME, INPUT)
    await harness.connected()
    results = await asyncio.gather(
        *(harness.client.exec("sys-room101", "Display", 1, "echo", [n]) for n in range(8))
    )
    assert results == [{"echo": n} for n in range(8)]
    await until(lambda: len(harness.values) == 3)


async def test_rebinding_an_existing_key_only_replaces_the_callback(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """Adding a key twice sends no second bind; the new callback gets later values."""
    harness = make_client()
    harness.bind(VOLUME)
    await harness.connected()
    await until(lambda: harness.has(VOLUME, 30))
    seen: list[Any] = []
    harness.client.add_bindings({VOLUME: lambda key, value: seen.append(value)})
    await sim.set_status("sys-room101", "Display", 1, "volume", 31)
    await until(lambda: seen == [31])
    assert sim.bind_requests == 1
    assert harness.values[VOLUME] == [30]


# ============================================================================ value decoding


async def test_stringified_values_are_decoded_in_auto_mode(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """Seed/legacy servers stringify values; `auto` gives the same values as a raw server."""
    sim.value_encoding = "string"
    harness = make_client()
    harness.bind(POWER, VOLUME, INPUT, BOOKINGS)
    await harness.connected()
    await until(lambda: len(harness.values) == 4)
    assert harness.values[POWER] == [True]
    assert harness.values[VOLUME] == [30]
    assert harness.values[INPUT] == ["hdmi"]
    assert harness.last(BOOKINGS)[0]["title"] == "Board meeting"


async def test_raw_server_strings_in_auto_mode(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """With a raw server, a plain string stays; a string holding JSON is parsed (the policy)."""
    harness = make_client()
    harness.bind(INPUT)
    await harness.connected()
    await until(lambda: harness.has(INPUT, "hdmi"))
    await sim.set_status("sys-room101", "Display", 1, "input", "[1, 2]")
    await until(lambda: harness.has(INPUT, [1, 2]))


async def test_raw_mode_keeps_strings(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """`raw` passes values exactly as they arrive, stringified ones included."""
    sim.value_encoding = "string"
    sim.set_method("sys-room101", "Display", 1, "echo", lambda value: value)
    harness = make_client(value_decoding="raw")
    harness.bind(POWER, INPUT)
    await harness.connected()
    await until(lambda: len(harness.values) == 2)
    assert harness.values[POWER] == ["true"]
    assert harness.values[INPUT] == ['"hdmi"']
    assert await harness.client.exec("sys-room101", "Display", 1, "echo", [[1]]) == "[1]"
    assert harness.client.diagnostics()["value_decoding"] == "raw"


async def test_exec_values_are_decoded_in_auto_mode(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """An exec's return value follows the same decoding as notifies."""
    sim.value_encoding = "string"
    sim.set_method("sys-room101", "Display", 1, "echo", lambda value: value)
    harness = make_client()
    await harness.connected()
    assert await harness.client.exec("sys-room101", "Display", 1, "echo", [{"a": [1]}]) == {
        "a": [1]
    }
    assert await harness.client.exec("sys-room101", "Display", 1, "echo", ["text"]) == "text"
    assert await harness.client.exec("sys-room101", "Display", 1, "echo", [None]) is None


def test_invalid_options(session: aiohttp.ClientSession) -> None:
    """Bad options fail at construction, not later in the loop."""
    with pytest.raises(ValueError, match="value_decoding"):
        PlaceOSWebSocket(session, "http://127.0.0.1:1", API_KEY, value_decoding="json")
    with pytest.raises(ValueError, match="positive"):
        PlaceOSWebSocket(session, "http://127.0.0.1:1", API_KEY, dead_after=0)
    with pytest.raises(ValueError, match="backoff_min"):
        PlaceOSWebSocket(session, "http://127.0.0.1:1", API_KEY, backoff_min=5, backoff_max=1)
    with pytest.raises(ValueError, match=r"https://placeos\.example\.com"):
        PlaceOSWebSocket(session, "placeos.example.com", API_KEY)


# ============================================================================ robustness


async def test_malformed_and_unexpected_frames_are_ignored(
    make_client: Factory, sim: PlaceOSSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage is counted and logged at debug level; the socket stays up and values flow."""
    caplog.set_level(logging.DEBUG, logger="custom_components.placeos.client")
    harness = make_client()
    harness.bind(VOLUME)
    await harness.connected()
    await until(lambda: harness.has(VOLUME, 30))
    meta = {"sys": "sys-room101", "mod": "Display", "index": 1, "name": "volume"}
    garbage: list[str | bytes] = [
        "not json",
        "[1, 2]",
        '"a string"',
        "42",
        '{"type": "bogus", "id": 1}',
        '{"no": "type"}',
        '{"type": "notify", "value": 1}',  # no meta
        '{"type": "notify", "meta": "x", "value": 1}',
        '{"type": "notify", "meta": {"sys": "sys-room101"}, "value": 1}',
        json.dumps({"type": "notify", "meta": {**meta, "name": ["x"]}, "value": 1}),
        json.dumps({"type": "debug", "id": 3, "msg": "hi", "meta": meta, "level": "info"}),
        "[" * 50_000,
        "x" * 2_000_000,  # a huge junk frame
        b"\x00\x01binary",
    ]
    for frame in garbage:
        await sim.inject_frame(frame)
    unmatched = [
        '{"type": "success", "id": 999999}',
        '{"type": "error", "id": 999998, "error_code": 1, "msg": "late"}',
        '{"type": "success", "id": "1"}',
        '{"type": "success", "id": [1]}',
        '{"type": "success"}',
    ]
    for frame in unmatched:
        await sim.inject_frame(frame)
    # A notify for a key nobody bound (another client's, say) is dropped quietly.
    other = {"sys": "sys-room101", "mod": "Display", "index": 9, "name": "volume"}
    await sim.inject_frame(json.dumps({"type": "notify", "id": 1, "meta": other, "value": 1}))
    await sim.set_status("sys-room101", "Display", 1, "volume", 77)
    await until(lambda: harness.has(VOLUME, 77))
    diagnostics = harness.client.diagnostics()
    assert diagnostics["frames_ignored"] == len(garbage)
    assert diagnostics["replies_unmatched"] == len(unmatched)
    assert diagnostics["notifies_unrouted"] == 1
    assert diagnostics["connects"] == 1
    assert sim.total_connections == 1
    assert harness.client.state is CONNECTED
    ignored = [r for r in caplog.records if " frame from PlaceOS " in r.getMessage()]
    assert len(ignored) == len(garbage)
    assert all(r.levelno == logging.DEBUG for r in ignored)
    assert max(len(r.getMessage()) for r in ignored) < 400  # huge frames are cut in the log


async def test_large_values_do_not_kill_the_socket(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """A multi-megabyte status value is delivered; the socket stays open (no size limit)."""
    harness = make_client()
    harness.bind(BOOKINGS)
    await harness.connected()
    await until(lambda: BOOKINGS in harness.values)
    big = [{"id": f"evt-{n}", "title": "x" * 200} for n in range(8_000)]  # about 1.9 MB
    await sim.set_status("sys-room101", "Bookings", 1, "bookings", big)
    await until(lambda: harness.has(BOOKINGS, big))
    assert sim.total_connections == 1
    assert harness.client.diagnostics()["frames_ignored"] == 0


async def test_unsolicited_pong_is_accepted_silently(
    socket_enabled: None, session: aiohttp.ClientSession
) -> None:
    """The server's periodic `pong` is proof of life, not an ignored frame."""
    sim = PlaceOSSimulator(unsolicited_pong_interval=0.01)
    await sim.start()
    client = PlaceOSWebSocket(session, sim.url, API_KEY, **{**FAST, "ping_interval": 10.0})
    task = asyncio.get_running_loop().create_task(client.run())
    try:
        await client.wait_connected(3)
        await until(lambda: client.diagnostics()["pongs"] >= 5)
        # Our own ping went out once only, so most pongs were unsolicited.
        assert client.diagnostics()["frames_ignored"] == 0
        assert client.diagnostics()["connects"] == 1
    finally:
        await client.close()
        await task
        await sim.stop()


async def test_callback_errors_are_logged_once_and_reading_continues(
    make_client: Factory, sim: PlaceOSSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing callback is logged once with its traceback; other bindings keep working."""
    caplog.set_level(logging.DEBUG, logger="custom_components.placeos.client")
    harness = make_client()

    def broken(key: BindingKey, value: Any) -> None:
        raise RuntimeError(f"bad value {value}")

    harness.client.add_bindings({POWER: broken, VOLUME: harness.record})
    await harness.connected()
    await until(lambda: harness.has(VOLUME, 30))
    await sim.set_status("sys-room101", "Display", 1, "power", False)
    await sim.set_status("sys-room101", "Display", 1, "volume", 40)
    await until(lambda: harness.has(VOLUME, 40))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "Display_1.power" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert harness.client.diagnostics()["callback_errors"] == 2
    assert "Callback for Display_1.power failed again" in caplog.text
    assert harness.client.state is CONNECTED


async def test_invalid_utf8_text_frame_recovers_by_reconnecting(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """aiohttp closes a socket on invalid UTF-8 (1007); the client reconnects and rebinds."""
    harness = make_client()
    harness.bind(VOLUME)
    await harness.connected()
    await sim.inject_frame(b"\xff\xfe", text=True)
    await harness.reconnected(2)
    await sim.set_status("sys-room101", "Display", 1, "volume", 12)
    await until(lambda: harness.has(VOLUME, 12))


async def test_state_listener_errors_do_not_stop_the_client(
    make_client: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing state listener is logged; the loop goes on; removal stops the calls."""
    harness = make_client()
    calls: list[ConnectionState] = []

    def broken(state: ConnectionState, reason: BaseException | None) -> None:
        calls.append(state)
        raise RuntimeError("listener bug")

    remove = harness.client.add_state_listener(broken)
    await harness.connected()
    assert calls == [CONNECTING, SYNCING, CONNECTED]
    assert sum("state listener" in r.getMessage() for r in caplog.records) == 3
    remove()
    remove()  # idempotent
    await harness.client.close()
    assert calls == [CONNECTING, SYNCING, CONNECTED]


# ============================================================================ keep-alive


async def test_silent_server_is_declared_dead_and_replaced(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """No frame for dead_after seconds: the socket is closed and a new one opened."""
    harness = make_client()
    harness.bind(VOLUME)
    await harness.connected()
    sim.silent = True
    await until(lambda: harness.client.state is DISCONNECTED, timeout=2)
    reason = harness.states[-1][1]
    assert isinstance(reason, PlaceOSTimeoutError)
    assert "nothing received" in str(reason)
    sim.silent = False
    await sim.set_status("sys-room101", "Display", 1, "volume", 5)  # while no one listens
    await harness.reconnected(2)
    await until(lambda: harness.has(VOLUME, 5))
    assert sim.connections == 1  # the dead socket was closed on our side


async def test_pings_keep_a_quiet_connection_alive(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """With pongs answering pings, a connection without notifies stays up past dead_after."""
    harness = make_client()
    await harness.connected()
    await asyncio.sleep(0.5)  # well past dead_after (0.3 s)
    assert harness.client.diagnostics()["connects"] == 1
    assert harness.client.diagnostics()["pongs"] >= 5


async def test_unanswered_pings_reconnect(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """A server that stops answering `ping` (and sends nothing else) is replaced."""
    harness = make_client()
    await harness.connected()
    sim.answer_ping = False
    await until(lambda: harness.client.diagnostics()["disconnects"] >= 1, timeout=2)
    sim.answer_ping = True
    await harness.reconnected(2)


async def test_socket_that_never_sends_anything(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """A handshake that succeeds but is followed by total silence is caught by dead_after."""
    sim.silent = True
    harness = make_client()
    harness.bind(VOLUME)  # the bind reply never comes either
    harness.start()
    await until(lambda: harness.client.diagnostics()["disconnects"] >= 2, timeout=3)
    assert harness.client.state is not CONNECTED
    timeouts = [r for s, r in harness.states if s is DISCONNECTED]
    assert all(isinstance(reason, PlaceOSTimeoutError) for reason in timeouts)
    with pytest.raises(PlaceOSTimeoutError):
        await harness.client.wait_connected(0.05)
    sim.silent = False
    sim.drop_connections()  # a socket opened while silent had its bind swallowed
    # The initial notify may come before the bind's success: wait for both.
    await until(lambda: harness.has(VOLUME, 30) and harness.client.state is CONNECTED)


# ============================================================================ reconnect


async def test_dropped_tcp_connection_reconnects_rebinds_with_fresh_values(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """After a drop every binding is re-sent; initial notifies bring the values missed."""
    harness = make_client()
    harness.bind(POWER, VOLUME)

    def change_while_down(state: ConnectionState, reason: BaseException | None) -> None:
        if state is DISCONNECTED:
            sim.set_status("sys-room101", "Display", 1, "volume", 99)

    harness.client.add_state_listener(change_while_down)
    await harness.connected()
    await until(lambda: len(harness.values) == 2)
    assert sim.drop_connections().count == 1
    await harness.reconnected(2)
    await until(lambda: harness.has(VOLUME, 99))
    assert harness.values[VOLUME] == [30, 99]
    assert sim.bind_requests == 4
    assert harness.state_names() == [
        CONNECTING,
        SYNCING,
        CONNECTED,
        DISCONNECTED,
        CONNECTING,
        SYNCING,
        CONNECTED,
    ]
    assert isinstance(harness.states[3][1], PlaceOSConnectionError)
    diagnostics = harness.client.diagnostics()
    assert (diagnostics["connects"], diagnostics["reconnects"]) == (2, 1)
    assert diagnostics["disconnects"] == 1


async def test_server_restart_on_the_same_port(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """While the server is gone attempts fail and back off; it is found again on restart."""
    harness = make_client()
    harness.bind(VOLUME)
    await harness.connected()
    await sim.stop()
    await until(
        lambda: sum(state is DISCONNECTED for state in harness.state_names()) >= 3, timeout=2
    )
    refused = [r for s, r in harness.states if s is DISCONNECTED][1:]
    assert all(type(reason) is PlaceOSConnectionError for reason in refused)
    assert "cannot connect" in str(refused[0])
    with pytest.raises(PlaceOSConnectionError):
        await harness.client.wait_connected(0.05)
    sim.set_status("sys-room101", "Display", 1, "volume", 64)
    await sim.start(port=sim.port or 0)
    await harness.reconnected(2)
    await until(lambda: harness.has(VOLUME, 64))


async def test_backoff_spaces_out_attempts(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """Attempts against a dead port are spaced by the backoff, not a busy loop.

    Only lower bounds on the gaps: a loaded machine can only make them longer. The cap itself
    is checked on `backoff_delay` directly.
    """
    await sim.stop()
    harness = make_client(backoff_min=0.02, backoff_max=0.04)
    loop = asyncio.get_running_loop()
    attempts: list[float] = []
    harness.client.add_state_listener(
        lambda state, _reason: attempts.append(loop.time()) if state is CONNECTING else None
    )
    harness.start()
    await until(lambda: len(attempts) >= 5, timeout=5)
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert min(gaps) >= 0.02 * 0.95  # timer granularity


async def test_401_stops_the_loop(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """A rejected key ends run(): AUTH_FAILED, no further attempts, and no key in texts."""
    harness = make_client(api_key="wrong-secret-key")
    harness.start()
    with pytest.raises(PlaceOSAuthError) as caught:
        await harness.client.wait_connected(2)
    assert type(caught.value) is PlaceOSAuthError
    assert caught.value.status == 401
    assert harness.task is not None
    await asyncio.wait_for(harness.task, 1)
    assert harness.client.state is ConnectionState.AUTH_FAILED
    assert harness.state_names() == [CONNECTING, ConnectionState.AUTH_FAILED]
    assert sim.handshakes_rejected == 1
    assert "wrong-secret-key" not in str(caught.value)
    assert "wrong-secret-key" not in repr(harness.client)
    assert "wrong-secret-key" not in json.dumps(harness.client.diagnostics())
    assert caught.value.__cause__ is None  # the aiohttp error (with headers) is not chained
    # wait_connected after the loop stopped raises at once.
    with pytest.raises(PlaceOSAuthError):
        await harness.client.wait_connected(5)


async def test_401_after_reconnect_stops_the_loop(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """A key revoked while connected is noticed on the next handshake."""
    harness = make_client()
    await harness.connected()
    sim.revoke_key(API_KEY)
    sim.drop_connections()
    assert harness.task is not None
    await asyncio.wait_for(harness.task, 2)
    assert harness.client.state is ConnectionState.AUTH_FAILED
    assert isinstance(harness.client.diagnostics()["last_error"], str)
    assert harness.client.diagnostics()["last_error"].startswith("PlaceOSAuthError")


async def test_403_is_a_forbidden_auth_failure(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """A key without the scope gets PlaceOSForbiddenError and the loop stops."""
    sim.reject_next_handshakes(1, status=403)
    harness = make_client()
    harness.start()
    with pytest.raises(PlaceOSForbiddenError) as caught:
        await harness.client.wait_connected(2)
    assert caught.value.status == 403
    assert harness.task is not None
    await asyncio.wait_for(harness.task, 1)
    assert harness.client.state is ConnectionState.AUTH_FAILED


async def test_run_after_auth_failure_can_start_again(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """run() may be called again after AUTH_FAILED (e.g. once the key is valid again)."""
    sim.reject_next_handshakes(1)
    harness = make_client()
    harness.start()
    assert harness.task is not None
    await asyncio.wait_for(harness.task, 2)
    harness.start()
    await until(lambda: harness.client.state is not ConnectionState.AUTH_FAILED)
    await harness.client.wait_connected(2)


async def test_unexpected_handshake_status_keeps_retrying(
    socket_enabled: None, session: aiohttp.ClientSession
) -> None:
    """Other HTTP statuses are connection errors carrying the status; the loop goes on."""
    hits = 0

    async def unavailable(request: aiohttp.web.Request) -> aiohttp.web.Response:
        nonlocal hits
        hits += 1
        return aiohttp.web.Response(status=503, text="maintenance")

    app = aiohttp.web.Application()
    app.router.add_get("/api/engine/v2/systems/control", unavailable)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = PlaceOSWebSocket(session, f"http://127.0.0.1:{port}", API_KEY, **FAST)
    task = asyncio.get_running_loop().create_task(client.run())
    try:
        await until(lambda: hits >= 3)
        with pytest.raises(PlaceOSConnectionError) as caught:
            await client.wait_connected(0.05)
        assert caught.value.status == 503
        assert "503" in str(caught.value)
        with pytest.raises(PlaceOSConnectionError):
            await client.probe(1)
    finally:
        await client.close()
        await task
        await runner.cleanup()
    assert client.state is ConnectionState.CLOSED


async def test_closed_session_is_reported_not_raised(
    socket_enabled: None, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error (here: the caller closed its session) never escapes run()."""
    session = aiohttp.ClientSession()
    await session.close()
    client = PlaceOSWebSocket(session, "http://127.0.0.1:9", API_KEY, **FAST)
    attempts: list[ConnectionState] = []
    client.add_state_listener(lambda state, reason: attempts.append(state))
    task = asyncio.get_running_loop().create_task(client.run())
    with pytest.raises(PlaceOSConnectionError, match="unexpected error while connecting"):
        await client.wait_connected(0.1)
    await until(lambda: attempts.count(CONNECTING) >= 3)
    # Logged once, not on every retry.
    assert caplog.text.count("Unexpected error connecting to PlaceOS") == 1
    assert not task.done()
    await client.close()
    await task


async def test_connection_refused(socket_enabled: None, session: aiohttp.ClientSession) -> None:
    """Nothing listening: PlaceOSConnectionError from probe and from wait_connected."""
    with_socket = __import__("socket").socket()
    with_socket.bind(("127.0.0.1", 0))
    port = with_socket.getsockname()[1]
    with_socket.close()
    client = PlaceOSWebSocket(session, f"http://127.0.0.1:{port}", API_KEY, **FAST)
    with pytest.raises(PlaceOSConnectionError, match="cannot connect"):
        await client.probe(1)
    task = asyncio.get_running_loop().create_task(client.run())
    with pytest.raises(PlaceOSConnectionError):
        await client.wait_connected(0.2)
    await client.close()
    await task


# ============================================================================ exec


async def test_exec_success_and_arguments(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """exec sends the arguments and returns the method's value; a setter updates the status."""
    received: list[tuple[Any, ...]] = []

    def handler(*args: Any) -> dict[str, Any]:
        received.append(args)
        return {"ok": True}

    sim.set_method("sys-room101", "Display", 1, "custom", handler)
    harness = make_client()
    harness.bind(VOLUME)
    await harness.connected()
    result = await harness.client.exec("sys-room101", "Display", 1, "custom", [1, "two", [3]])
    assert result == {"ok": True}
    assert received == [(1, "two", [3])]
    assert await harness.client.exec("sys-room101", "Display", 1, "custom") == {"ok": True}
    assert received[-1] == ()
    await harness.client.exec("sys-room101", "Display", 1, "volume", (44,))
    await until(lambda: harness.has(VOLUME, 44))
    exec_request = next(r for r in sim.requests if r.cmd == "exec")
    assert (exec_request.sys, exec_request.mod, exec_request.index) == ("sys-room101", "Display", 1)


@pytest.mark.parametrize(
    "case",
    [
        (("sys-room101", "Projector", 1, "power"), 6, 500, "could not find module"),
        (("sys-nowhere", "Display", 1, "power"), 6, 500, "could not find module"),
        (("sys-room101", "Display", 1, "explode"), 1, 500, "could not find function explode"),
        (("sys-room101", "_Admin", 1, "restart"), 2, 500, "privileged function restart"),
        (("sys-room101", "Display", 1, "driver_fail"), 3, 404, "module raised: no such input"),
        (("sys-room101", "Display", 1, "core_down"), 7, 500, "core unreachable"),
        (("sys-room101", "Display", 1, "crash"), 3, 500, "module raised: oops"),
    ],
)
async def test_exec_errors(
    make_client: Factory,
    sim: PlaceOSSimulator,
    case: tuple[tuple[str, str, int, str], int, int, str],
) -> None:
    """Each server error becomes PlaceOSCommandError with category, message and code."""
    target, error_code, code, message = case

    def driver_fail() -> None:
        raise DriverError("no such input", 404)

    def core_down() -> None:
        raise UnexpectedFailure("core unreachable")

    def crash() -> None:
        raise ValueError("oops")

    sim.set_method("sys-room101", "Display", 1, "driver_fail", driver_fail)
    sim.set_method("sys-room101", "Display", 1, "core_down", core_down)
    sim.set_method("sys-room101", "Display", 1, "crash", crash)
    harness = make_client()
    await harness.connected()
    with pytest.raises(PlaceOSCommandError) as caught:
        await harness.client.exec(*target)
    assert caught.value.error_code == error_code
    assert caught.value.code == code
    assert message in caught.value.message
    assert harness.client.diagnostics()["pending_requests"] == 0


async def test_exec_timeout(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """No reply: PlaceOSTimeoutError after the default or the per-call timeout."""
    harness = make_client(exec_timeout=0.1)
    await harness.connected()
    sim.drop_replies = True
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PlaceOSTimeoutError, match=r"Display_1\.power"):
        await harness.client.exec("sys-room101", "Display", 1, "power", [True])
    assert 0.09 <= loop.time() - started < 0.4
    started = loop.time()
    with pytest.raises(PlaceOSTimeoutError):
        await harness.client.exec("sys-room101", "Display", 1, "power", [True], timeout=0.02)
    assert loop.time() - started < 0.09
    diagnostics = harness.client.diagnostics()
    assert diagnostics["requests_timed_out"] == 2
    assert diagnostics["pending_requests"] == 0
    assert harness.client.state is CONNECTED  # pongs still arrive: the socket is fine
    # A late reply to a timed-out request is ignored without harm.
    sim.drop_replies = False
    sim.reply_delay = 0.05
    with pytest.raises(PlaceOSTimeoutError):
        await harness.client.exec("sys-room101", "Display", 1, "power", [True], timeout=0.01)
    await until(lambda: harness.client.diagnostics()["replies_unmatched"] == 1)


async def test_exec_when_not_connected(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """exec fails at once without a socket; nothing is queued."""
    harness = make_client()
    with pytest.raises(PlaceOSNotConnectedError):
        await harness.client.exec("sys-room101", "Display", 1, "power", [True])
    await sim.stop()
    harness.start()
    await until(lambda: harness.client.state is DISCONNECTED)
    with pytest.raises(PlaceOSNotConnectedError):
        await harness.client.exec("sys-room101", "Display", 1, "power", [True])


async def test_exec_rejects_bad_input_before_sending(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """Values the server would silently drop are refused locally."""
    harness = make_client()
    await harness.connected()
    with pytest.raises(ValueError, match="index"):
        await harness.client.exec("sys-room101", "Display", 0, "power")
    with pytest.raises(ValueError, match="Out of range float"):
        await harness.client.exec("sys-room101", "Display", 1, "volume", [float("nan")])
    with pytest.raises(TypeError):
        await harness.client.exec("sys-room101", "Display", 1, "volume", [object()])
    assert sim.exec_requests == 0
    assert harness.client.diagnostics()["pending_requests"] == 0


async def test_exec_fails_promptly_when_the_socket_drops(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """A pending exec fails with PlaceOSConnectionError on loss, long before its timeout."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "done"

    sim.set_method("sys-room101", "Display", 1, "slow", slow)
    harness = make_client(exec_timeout=10)
    await harness.connected()
    loop = asyncio.get_running_loop()
    call = loop.create_task(harness.client.exec("sys-room101", "Display", 1, "slow"))
    await started.wait()
    begin = loop.time()
    sim.drop_connections()
    with pytest.raises(PlaceOSConnectionError, match="lost"):
        await call
    assert loop.time() - begin < 0.5
    release.set()
    await harness.reconnected(2)
    assert harness.client.diagnostics()["pending_requests"] == 0


# ============================================================================ bindings live


async def test_add_and_remove_bindings_while_connected(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """Live changes bind/unbind on the open socket; removed keys get no more callbacks."""
    harness = make_client()
    harness.bind(POWER)
    await harness.connected()
    harness.bind(VOLUME, INPUT)
    await until(lambda: harness.has(VOLUME, 30) and harness.has(INPUT, "hdmi"))
    assert sim.bind_requests == 3
    harness.client.remove_bindings([VOLUME, BindingKey("sys-x", "Nope", 1, "never")])
    await until(lambda: sim.unbind_requests == 1)
    await until(lambda: sim.subscribers(*VOLUME) == 0)
    assert VOLUME not in harness.client.bindings
    await sim.set_status("sys-room101", "Display", 1, "volume", 1)
    await sim.set_status("sys-room101", "Display", 1, "input", "usb")
    await until(lambda: harness.has(INPUT, "usb"))
    assert harness.values[VOLUME] == [30]
    # Adding it back binds again and brings the current value.
    harness.bind(VOLUME)
    await until(lambda: harness.has(VOLUME, 1))
    harness.client.add_bindings({})
    harness.client.remove_bindings([])
    assert sim.bind_requests == 4


async def test_bindings_changed_while_disconnected_apply_on_connect(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """Without a socket only the registry changes; the next connect binds what is left."""
    harness = make_client()
    harness.bind(POWER, VOLUME)
    harness.client.remove_bindings([POWER])
    harness.client.add_bindings({(INPUT.sys, INPUT.mod, INPUT.index, INPUT.name): harness.record})  # type: ignore[dict-item]
    assert sim.total_connections == 0
    await harness.connected()
    await until(lambda: len(harness.values) == 2)
    assert set(harness.values) == {VOLUME, INPUT}
    assert sim.bind_requests == 2
    assert sim.unbind_requests == 0
    assert all(type(key) is BindingKey for key in harness.client.bindings)


async def test_bind_error_is_one_warning_and_blocks_nothing(
    make_client: Factory, sim: PlaceOSSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A protected module's bind is refused: one WARNING naming it, even across reconnects."""
    caplog.set_level(logging.DEBUG, logger="custom_components.placeos.client")
    harness = make_client()
    harness.bind(FIRMWARE, VOLUME)
    await harness.connected()
    await until(lambda: harness.has(VOLUME, 30))
    sim.drop_connections()
    await harness.reconnected(2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert sum("bind of _Admin_1.firmware" in r.getMessage() for r in caplog.records) == 1
    assert "_Admin_1.firmware" in warnings[0].getMessage()
    assert "error_code=2" in warnings[0].getMessage()
    assert FIRMWARE not in harness.values


async def test_admin_key_may_bind_protected_modules(
    socket_enabled: None, session: aiohttp.ClientSession
) -> None:
    """The same binding works for an admin key (the error is the server's decision)."""
    sim = PlaceOSSimulator(admin_keys=("admin-key",))
    await sim.start()
    client = PlaceOSWebSocket(session, sim.url, "admin-key", **FAST)
    seen: list[Any] = []
    client.add_bindings({FIRMWARE: lambda key, value: seen.append(value)})
    task = asyncio.get_running_loop().create_task(client.run())
    try:
        await client.wait_connected(2)
        await until(lambda: seen == ["1.4.2"])
    finally:
        await client.close()
        await task
        await sim.stop()


async def test_bind_replies_that_never_come_still_reach_connected(
    make_client: Factory, sim: PlaceOSSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Binds are awaited with one timeout; unanswered ones are counted, then CONNECTED."""
    caplog.set_level(logging.DEBUG, logger="custom_components.placeos.client")
    sim.drop_replies = True
    harness = make_client(request_timeout=0.1)
    harness.bind(POWER, VOLUME, INPUT)
    harness.start()
    await until(lambda: harness.client.state is SYNCING)
    with pytest.raises(PlaceOSTimeoutError, match="not connected within"):
        await harness.client.wait_connected(0.02)
    await harness.client.wait_connected(1)
    assert harness.client.diagnostics()["requests_timed_out"] == 3
    assert "No reply to bind within 0.1 s for Display_1.power, Display_1.volume, " in caplog.text
    # Initial notifies travel even when replies are dropped.
    await until(lambda: len(harness.values) == 3)


async def test_many_bindings_are_sent_before_any_reply_is_awaited(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """Pipelining: with slow replies, 200 binds still complete in about one reply delay."""
    sim.reply_delay = 0.1
    harness = make_client()
    keys = [BindingKey("sys-room101", "Sensor", 1, f"s{n}") for n in range(200)]
    harness.bind(*keys)
    loop = asyncio.get_running_loop()
    begin = loop.time()
    await harness.connected()
    assert loop.time() - begin < 0.45  # one by one would take 20 s
    assert sim.bind_requests == 200


# ============================================================================ close and probe


async def test_close_is_idempotent_and_stops_run(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """close() ends run(), closes the socket, and can be called again."""
    harness = make_client()
    harness.bind(VOLUME)
    await harness.connected()
    await harness.client.close()
    assert harness.task is not None
    await asyncio.wait_for(harness.task, 1)
    assert harness.client.state is ConnectionState.CLOSED
    assert harness.state_names()[-1] is ConnectionState.CLOSED
    await harness.client.close()
    await until(lambda: sim.connections == 0)
    with pytest.raises(PlaceOSNotConnectedError):
        await harness.client.exec("sys-room101", "Display", 1, "power")
    with pytest.raises(PlaceOSConnectionError, match="closed"):
        await harness.client.wait_connected(1)
    await harness.client.run()  # returns at once after close


async def test_close_during_backoff(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """A long backoff does not delay close()."""
    await sim.stop()
    harness = make_client(backoff_min=30, backoff_max=30)
    harness.start()
    await until(lambda: harness.client.state is DISCONNECTED)
    loop = asyncio.get_running_loop()
    begin = loop.time()
    await harness.client.close()
    assert harness.task is not None
    await asyncio.wait_for(harness.task, 1)
    assert loop.time() - begin < 0.5


async def test_close_during_pending_requests(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """Pending execs fail with PlaceOSConnectionError; close is quick."""
    sim.drop_replies = True
    harness = make_client(exec_timeout=10)
    await harness.connected()
    loop = asyncio.get_running_loop()
    calls = [
        loop.create_task(harness.client.exec("sys-room101", "Display", 1, "power", [n]))
        for n in range(3)
    ]
    await until(lambda: harness.client.diagnostics()["pending_requests"] == 3)
    begin = loop.time()
    await harness.client.close()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, PlaceOSConnectionError) for result in results)
    assert loop.time() - begin < 0.5
    assert harness.task is not None
    await asyncio.wait_for(harness.task, 1)


async def test_close_during_sync(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """Closing while binds are outstanding ends everything without warnings."""
    sim.drop_replies = True
    harness = make_client(request_timeout=10)
    harness.bind(POWER, VOLUME)
    harness.start()
    await until(lambda: harness.client.state is SYNCING)
    await harness.client.close()
    assert harness.task is not None
    await asyncio.wait_for(harness.task, 1)
    assert harness.client.diagnostics()["pending_requests"] == 0


async def _hanging_server() -> tuple[asyncio.Server, int, list[asyncio.StreamWriter]]:
    """A TCP server that accepts connections and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], writers


async def _stop_hanging_server(server: asyncio.Server, writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_close_during_handshake(socket_enabled: None, session: aiohttp.ClientSession) -> None:
    """A handshake that never completes is abandoned by close()."""
    server, port, writers = await _hanging_server()
    client = PlaceOSWebSocket(
        session, f"http://127.0.0.1:{port}", API_KEY, **{**FAST, "request_timeout": 30}
    )
    task = asyncio.get_running_loop().create_task(client.run())
    try:
        await until(lambda: bool(writers))
        await client.close()
        await asyncio.wait_for(task, 1)
    finally:
        await _stop_hanging_server(server, writers)


async def test_handshake_timeout(socket_enabled: None, session: aiohttp.ClientSession) -> None:
    """A server that never answers the upgrade: request_timeout bounds each attempt."""
    server, port, writers = await _hanging_server()
    client = PlaceOSWebSocket(
        session, f"http://127.0.0.1:{port}", API_KEY, **{**FAST, "request_timeout": 0.05}
    )
    task = asyncio.get_running_loop().create_task(client.run())
    try:
        with pytest.raises(PlaceOSTimeoutError, match="no answer"):
            await client.wait_connected(0.5)
        with pytest.raises(PlaceOSTimeoutError):
            await client.probe(0.05)
    finally:
        await client.close()
        await task
        await _stop_hanging_server(server, writers)


async def test_cancelling_run_closes_the_client(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """Cancelling the run() task (entry unload) closes the socket and ends in CLOSED."""
    harness = make_client()
    await harness.connected()
    assert harness.task is not None
    harness.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await harness.task
    assert harness.client.state is ConnectionState.CLOSED
    await until(lambda: sim.connections == 0)


async def test_cancelling_run_during_handshake(
    socket_enabled: None, session: aiohttp.ClientSession
) -> None:
    """Cancellation while connecting leaves nothing running."""
    server, port, writers = await _hanging_server()
    client = PlaceOSWebSocket(
        session, f"http://127.0.0.1:{port}", API_KEY, **{**FAST, "request_timeout": 30}
    )
    task = asyncio.get_running_loop().create_task(client.run())
    try:
        await until(lambda: bool(writers))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.state is ConnectionState.CLOSED
    finally:
        await _stop_hanging_server(server, writers)


async def test_run_twice_is_refused(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """One client runs one loop."""
    harness = make_client()
    await harness.connected()
    with pytest.raises(RuntimeError, match="already running"):
        await harness.client.run()


async def test_probe(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """probe() opens, pings, gets a frame and closes; errors map like run()'s."""
    await make_client().client.probe(2)
    assert sim.total_connections == 1
    await until(lambda: sim.connections == 0)
    with pytest.raises(PlaceOSAuthError):
        await make_client(api_key="nope").client.probe(2)
    sim.silent = True
    with pytest.raises(PlaceOSTimeoutError, match="no answer"):
        await make_client().client.probe(0.1)
    sim.silent = False
    sim.reject_next_handshakes(1, status=403)
    with pytest.raises(PlaceOSForbiddenError):
        await make_client().client.probe(2)
    await until(lambda: sim.connections == 0)


async def test_probe_closed_right_away(
    socket_enabled: None, session: aiohttp.ClientSession
) -> None:
    """A server that closes the socket right after the upgrade fails the probe."""

    async def close_at_once(request: aiohttp.web.Request) -> aiohttp.web.WebSocketResponse:
        ws = aiohttp.web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    app = aiohttp.web.Application()
    app.router.add_get("/api/engine/v2/systems/control", close_at_once)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        client = PlaceOSWebSocket(session, f"http://127.0.0.1:{port}", API_KEY, **FAST)
        with pytest.raises(PlaceOSConnectionError, match="closed the socket"):
            await client.probe(1)
    finally:
        await runner.cleanup()


# ============================================================================ TLS


async def test_tls_verification(socket_enabled: None, session: aiohttp.ClientSession) -> None:
    """A self-signed certificate fails with verification on and works with it off."""
    from custom_components.placeos.client import PlaceOSTLSError
    from placeos_sim.tls import self_signed_ssl_context

    sim = PlaceOSSimulator(ssl_context=self_signed_ssl_context())
    await sim.start()
    assert sim.url.startswith("https://")
    verifying = PlaceOSWebSocket(session, sim.url, API_KEY, **FAST)
    relaxed = PlaceOSWebSocket(session, sim.url, API_KEY, verify_ssl=False, **FAST)
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(verifying.run()), loop.create_task(relaxed.run())]
    try:
        assert verifying.url.startswith("wss://")
        with pytest.raises(PlaceOSTLSError) as caught:
            await verifying.probe(2)
        assert "certificate" in str(caught.value).lower()
        with pytest.raises(PlaceOSTLSError):
            await verifying.wait_connected(0.3)
        await relaxed.probe(2)
        await relaxed.wait_connected(2)
        assert await relaxed.exec("sys-room101", "Display", 1, "volume", [3]) == 3
    finally:
        await verifying.close()
        await relaxed.close()
        await asyncio.gather(*tasks)
        await sim.stop()


# ============================================================================ diagnostics


async def test_diagnostics(make_client: Factory, sim: PlaceOSSimulator) -> None:
    """Diagnostics report state and counters, never the key."""
    harness = make_client()
    harness.bind(POWER, VOLUME)
    await harness.connected()
    await until(lambda: len(harness.values) == 2)
    diagnostics = harness.client.diagnostics()
    assert diagnostics == {
        **diagnostics,
        "state": "connected",
        "url": sim.ws_url,
        "verify_ssl": True,
        "value_decoding": "auto",
        "connects": 1,
        "reconnects": 0,
        "disconnects": 0,
        "notifies": 2,
        "frames_ignored": 0,
        "requests_timed_out": 0,
        "bindings": 2,
        "pending_requests": 0,
        "last_error": None,
    }
    assert API_KEY not in json.dumps(diagnostics)
    assert API_KEY not in repr(harness.client)
    assert harness.client.url == sim.ws_url
