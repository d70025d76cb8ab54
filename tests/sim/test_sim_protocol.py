"""Requests, replies and pushes of the control WebSocket (protocol §2-4)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from placeos_sim import (
    BindingKey,
    DriverError,
    PlaceOSSimulator,
    UnexpectedFailure,
    parse_request,
)
from tests.sim.helpers import SYS, RawSocket, connect, meta, settle

# -- keep-alive -----------------------------------------------------------------------------


async def test_ping_pong_and_switch(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """Text ping -> text pong; with answer_ping off, nothing."""
    await sock.ws.send_str("ping")
    assert await sock.recv_text() == "pong"
    sim.answer_ping = False
    await sock.ws.send_str("ping")
    await sock.ws.pong(b"unsolicited")  # a client pong is accepted silently
    await sock.expect_silence()
    assert sim.frames_received == 2
    assert sim.frames_ignored == 0


async def test_protocol_ping_gets_empty_pong(sock: RawSocket) -> None:
    """A protocol-level Ping is answered with an empty Pong (no payload echo)."""
    await sock.ws.ping(b"hello")
    msg = await sock.recv_raw()
    assert msg.type is aiohttp.WSMsgType.PONG
    assert msg.data == b""


async def test_unsolicited_pong(session: aiohttp.ClientSession, socket_enabled: None) -> None:
    """With an interval set, every socket gets a `pong` it never asked for."""
    sim = PlaceOSSimulator(unsolicited_pong_interval=0.02)
    await sim.start()
    try:
        raw = await connect(session, sim)
        assert await raw.recv_text() == "pong"
        assert await raw.recv_text() == "pong"
        await raw.close()
    finally:
        await sim.stop()


# -- strict parsing ------------------------------------------------------------------------

_VALID: dict[str, Any] = {
    "id": 1,
    "cmd": "bind",
    "sys": SYS,
    "mod": "Display",
    "index": 1,
    "name": "power",
}


def _with(**changes: Any) -> str:
    request = dict(_VALID)
    for key, value in changes.items():
        if value is _DROP:
            request.pop(key)
        else:
            request[key] = value
    return json.dumps(request)


_DROP = object()

MALFORMED = [
    "not json",
    "{",
    "[1, 2]",
    '"ping"',
    "PING",
    "null",
    _with(extra=1),
    _with(id="1"),
    _with(id=True),
    _with(id=1.0),
    _with(id=2**63),
    _with(id=_DROP),
    _with(cmd="subscribe"),
    _with(cmd=1),
    _with(cmd=_DROP),
    _with(sys=1),
    _with(sys=_DROP),
    _with(mod=None),
    _with(mod=_DROP),
    _with(name=["power"]),
    _with(name=_DROP),
    _with(index="1"),
    _with(index=True),
    _with(index=None),
    _with(index=2**31),
    _with(args="x"),
    _with(args={"a": 1}),
    '{"id": NaN, "cmd": "bind", "sys": "s", "mod": "m", "name": "n"}',
]


@pytest.mark.parametrize("frame", MALFORMED)
async def test_malformed_requests_get_silence(
    sim: PlaceOSSimulator, sock: RawSocket, frame: str
) -> None:
    """Anything not exactly right is ignored without a reply, and counted."""
    await sock.ws.send_str(frame)
    await sock.expect_silence(0.03)
    assert sim.frames_ignored == 1
    assert sim.bind_requests == 0
    # The socket still works afterwards.
    await sock.request("bind", 2, "volume")
    assert (await sock.recv())["id"] == 2


async def test_binary_frames_are_ignored(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """Binary frames are counted as ignored and get no reply."""
    await sock.ws.send_bytes(json.dumps(_VALID).encode())
    await sock.expect_silence(0.03)
    assert sim.frames_received == 1
    assert sim.frames_ignored == 1


def test_parse_request_accepts_the_documented_shapes() -> None:
    """Optional index/args, null args, case-insensitive commands."""
    minimal = parse_request('{"id": -5, "cmd": "EXEC", "sys": "s", "mod": "m", "name": "n"}')
    assert minimal is not None
    assert (minimal.id, minimal.cmd, minimal.index, minimal.args) == (-5, "exec", 1, [])
    null_args = parse_request(_with(cmd="exec", args=None))
    assert null_args is not None
    assert null_args.args == []
    with_args = parse_request(_with(cmd="exec", args=[1, "a"], index=3))
    assert with_args is not None
    assert (with_args.args, with_args.index) == ([1, "a"], 3)


# -- bind ----------------------------------------------------------------------------------


async def test_bind_success_then_initial_notify(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """Default: success (with meta) first, then exactly one notify with the raw value."""
    await sock.request("bind", 7, "power")
    success, notify = await sock.recv_many(2)
    assert success == {"id": 7, "type": "success", "meta": meta("power")}
    assert notify == {"id": 7, "type": "notify", "value": True, "meta": meta("power")}
    await sock.expect_silence(0.03)
    assert sim.bind_requests == 1
    assert sim.subscribers(SYS, "Display", 1, "power") == 1
    assert BindingKey(SYS, "Display", 1, "power") in sim.bound_keys()


async def test_notify_before_success(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """The switch puts the initial notify before the success."""
    sim.notify_before_success = True
    await sock.request("bind", 1, "input")
    notify, success = await sock.recv_many(2)
    assert notify == {"id": 1, "type": "notify", "value": "hdmi", "meta": meta("input")}
    assert success["type"] == "success"


async def test_bind_without_value_sends_no_notify(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """A status without a value: only the success."""
    await sock.request("bind", 1, "nonexistent")
    assert (await sock.recv())["type"] == "success"
    await sock.expect_silence(0.03)


async def test_later_changes_use_the_original_bind_id(
    sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """Changes notify with the first bind's id; a rebind succeeds without a new notify."""
    await sock.request("bind", 10, "volume")
    await sock.recv_many(2)
    await sock.request("bind", 11, "volume")
    assert await sock.recv() == {"id": 11, "type": "success", "meta": meta("volume")}
    await sock.expect_silence(0.03)
    delivery = sim.set_status(SYS, "Display", 1, "volume", 55)
    assert delivery.frames == 1
    await delivery
    assert await sock.recv() == {"id": 10, "type": "notify", "value": 55, "meta": meta("volume")}
    # Same value again: no notify, unless forced.
    assert sim.set_status(SYS, "Display", 1, "volume", 55).frames == 0
    await sim.set_status(SYS, "Display", 1, "volume", 55, force=True)
    assert (await sock.recv())["value"] == 55
    # A change of type with an equal value (1 vs True) is a change.
    await sim.set_status(SYS, "Display", 1, "volume", 1)
    await sim.set_status(SYS, "Display", 1, "volume", True)
    assert [f["value"] for f in await sock.recv_many(2)] == [1, True]


async def test_unknown_target_binds_and_receives_later(
    sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """Binding an unknown system/module succeeds; values arrive once it appears."""
    await sock.request("bind", 3, "temp", sys="sys-new", mod="Sensor", index=2)
    assert (await sock.recv())["meta"] == meta("temp", sys="sys-new", mod="Sensor", index=2)
    await sock.expect_silence(0.03)
    await sim.set_status("sys-new", "Sensor", 2, "temp", {"c": 21.5})
    frame = await sock.recv()
    assert frame == {
        "id": 3,
        "type": "notify",
        "value": {"c": 21.5},
        "meta": meta("temp", sys="sys-new", mod="Sensor", index=2),
    }
    assert sim.get_status("sys-new", "Sensor", 2, "temp") == {"c": 21.5}
    system = sim.scenario.system("sys-new")
    assert system is not None
    assert system.types() == {"Sensor": 2}
    with pytest.raises(ValueError, match="no module"):
        sim.set_status("sys-new", "Sensor", 0, "temp", 1)
    # A new status on an existing module works the same way.
    await sim.set_status(SYS, "Display", 2, "brand_new", "x")
    assert sim.get_status(SYS, "Display", 2, "brand_new") == "x"


async def test_deletion_notifies_null(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """delete_status and set_status(None) both push `"value": null`."""
    await sock.request("bind", 4, "input")
    await sock.recv_many(2)
    await sim.delete_status(SYS, "Display", 1, "input")
    assert await sock.recv() == {"id": 4, "type": "notify", "value": None, "meta": meta("input")}
    assert sim.get_status(SYS, "Display", 1, "input", "gone") == "gone"
    assert sim.delete_status(SYS, "Display", 1, "input").frames == 0  # already gone
    assert sim.delete_status("sys-missing", "X", 1, "y").frames == 0
    assert sim.get_status("sys-missing", "X", 1, "y") is None
    await sim.set_status(SYS, "Display", 1, "input", "vga")
    await sim.set_status(SYS, "Display", 1, "input", None)
    assert [f["value"] for f in await sock.recv_many(2)] == ["vga", None]
    # Rebinding a status without value: no notify.
    await sock.request("bind", 5, "input", index=1)
    assert (await sock.recv())["type"] == "success"


async def test_protected_module(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """`_` modules: error 2 for normal keys, values for admin keys."""
    await sock.request("bind", 1, "firmware", mod="_Admin")
    assert await sock.recv() == {
        "id": 1,
        "type": "error",
        "error_code": 2,
        "msg": "attempted to access protected module",
        "code": 500,
    }
    admin = await connect(session, sim, "admin-key")
    await admin.request("bind", 1, "firmware", mod="_Admin")
    success, notify = await admin.recv_many(2)
    assert success["type"] == "success"
    assert notify["value"] == "1.4.2"
    await admin.close()


async def test_unbind_is_bare_success_and_stops_notifies(
    sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """Unbind: `{"id", "type": "success"}` even for unknown bindings; no notifies after."""
    await sock.request("unbind", 1, "never-bound", sys="sys-x")
    assert await sock.recv() == {"id": 1, "type": "success"}
    await sock.request("bind", 2, "mute")
    await sock.recv_many(2)
    await sock.request("unbind", 3, "mute")
    assert await sock.recv() == {"id": 3, "type": "success"}
    assert sim.subscribers(SYS, "Display", 1, "mute") == 0
    await sim.set_status(SYS, "Display", 1, "mute", True)
    await sock.expect_silence(0.03)
    assert sim.unbind_requests == 2


async def test_notifies_reach_every_bound_socket(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """Two sockets bound to one key each get the change with their own bind id."""
    other = await connect(session, sim)
    await sock.request("bind", 1, "power")
    await other.request("bind", 99, "power")
    await sock.recv_many(2)
    await other.recv_many(2)
    delivery = sim.set_status(SYS, "Display", 1, "power", False)
    assert (delivery.sockets, delivery.frames) == (2, 2)
    assert "frames=2" in repr(delivery)
    await delivery
    assert (await sock.recv())["id"] == 1
    assert (await other.recv())["id"] == 99
    await other.close()
    await sim.wait_for(lambda: sim.connections == 1, timeout=1)
    assert sim.subscribers(SYS, "Display", 1, "power") == 1


# -- exec ----------------------------------------------------------------------------------


async def test_exec_success_sets_status_and_notifies(
    sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """Display.volume(level) stores `volume`: the bound socket gets a notify, then success."""
    await sock.request("bind", 1, "volume")
    await sock.recv_many(2)
    await sock.request("exec", 2, "volume", args=[80])
    notify, success = await sock.recv_many(2)
    assert notify == {"id": 1, "type": "notify", "value": 80, "meta": meta("volume")}
    assert success == {
        "id": 2,
        "type": "success",
        "value": 80,
        "meta": meta("volume"),
        "code": 200,
    }
    assert sim.get_status(SYS, "Display", 1, "volume") == 80
    assert sim.exec_requests == 1


async def test_exec_errors_follow_the_table(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """6 module not found, 1 no function, 2 privileged, 3 driver raised, 7 unexpected."""

    def boom() -> None:
        raise DriverError("device offline", code=503)

    def unexpected() -> None:
        raise UnexpectedFailure("core unreachable")

    def crash(value: int) -> int:
        return 1 // value

    sim.set_method(SYS, "Display", 1, "boom", boom)
    sim.set_method(SYS, "Display", 1, "unexpected", unexpected)
    sim.set_method(SYS, "Display", 1, "crash", crash)
    sim.set_method(SYS, "Display", 1, "unserialisable", lambda: {1, 2})
    cases: list[tuple[dict[str, Any], int, str, int]] = [
        ({"name": "power", "mod": "Nope"}, 6, "could not find module", 500),
        ({"name": "power", "sys": "sys-nope"}, 6, "could not find module", 500),
        ({"name": "power", "index": 9}, 6, "could not find module", 500),
        ({"name": "fly"}, 1, "could not find function fly", 500),
        (
            {"name": "restart", "mod": "_Admin"},
            2,
            "attempted to access privileged function restart",
            500,
        ),
        ({"name": "boom"}, 3, "module raised: device offline", 503),
        (
            {"name": "crash", "args": [0]},
            3,
            "module raised: integer division or modulo by zero",
            500,
        ),
        ({"name": "unexpected"}, 7, "core unreachable", 500),
    ]
    for ident, (request, error_code, message, code) in enumerate(cases, start=1):
        fields = {"sys": SYS, "mod": "Display", "index": 1, **request}
        await sock.send(id=ident, cmd="exec", **fields)
        assert await sock.recv() == {
            "id": ident,
            "type": "error",
            "error_code": error_code,
            "msg": message,
            "code": code,
        }, request
    await sock.request("exec", 50, "unserialisable")
    frame = await sock.recv()
    assert (frame["error_code"], frame["code"]) == (7, 500)
    # A stopped module: error 7.
    module = sim.scenario.module(SYS, "Display", 1)
    assert module is not None
    module.running = False
    await sock.request("exec", 51, "power", args=[True])
    assert (await sock.recv())["msg"] == "module stopped"
    # Removing a method: error 1.
    sim.set_method(SYS, "Display", 1, "boom", None)
    module.running = True
    await sock.request("exec", 52, "boom")
    assert (await sock.recv())["error_code"] == 1
    # Admin keys may call privileged functions.
    admin = await connect(session, sim, "admin-key")
    await admin.request("exec", 1, "restart", mod="_Admin")
    assert (await admin.recv())["value"] == "restarting"
    await admin.close()


async def test_exec_handlers_sync_async_and_concurrency(
    sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """Handlers get the args; a slow async handler does not hold up a fast one."""
    release = asyncio.Event()

    async def slow(tag: str) -> str:
        await release.wait()
        return f"slow {tag}"

    sim.set_method(SYS, "Display", 1, "slow", slow)
    sim.set_method(SYS, "Display", 1, "add", lambda a, b: a + b)
    sim.set_method(SYS, "Display", 1, "nothing", lambda: None)
    await sock.request("exec", 1, "slow", args=["a"])
    await sock.request("exec", 2, "add", args=[2, 3])
    fast = await sock.recv()
    assert (fast["id"], fast["value"]) == (2, 5)
    release.set()
    slow_reply = await sock.recv()
    assert (slow_reply["id"], slow_reply["value"]) == (1, "slow a")
    await sock.request("exec", 3, "nothing")
    assert (await sock.recv())["value"] is None


async def test_exec_slow_handler_cancelled_when_socket_closes(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """An exec in flight is cancelled (not leaked) when its socket goes away."""
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    sim.set_method(SYS, "Display", 1, "forever", forever)
    raw = await connect(session, sim)
    await raw.request("exec", 1, "forever")
    await asyncio.wait_for(started.wait(), 1)
    await raw.close()
    await asyncio.wait_for(cancelled.wait(), 1)


# -- encodings -----------------------------------------------------------------------------


async def test_string_value_encoding(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """`string`: values are stringified JSON (seed / legacy); null stays null."""
    sim.value_encoding = "string"
    await sock.request("bind", 1, "bookings", mod="Bookings")
    _success, notify = await sock.recv_many(2)
    assert isinstance(notify["value"], str)
    assert json.loads(notify["value"]) == sim.get_status(SYS, "Bookings", 1, "bookings")
    await sim.set_status(SYS, "Bookings", 1, "bookings", [])
    assert (await sock.recv())["value"] == "[]"
    await sock.request("exec", 2, "input", args=["hdmi"])
    assert (await sock.recv())["value"] == '"hdmi"'
    await sim.delete_status(SYS, "Bookings", 1, "bookings")
    assert (await sock.recv())["value"] is None
    with pytest.raises(ValueError, match="raw"):
        sim.value_encoding = "base64"
    assert sim.value_encoding == "string"


async def test_raw_frame_text_is_compact_json(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """Frames are compact JSON like Crystal's to_json; non-ASCII is sent as UTF-8."""
    await sim.set_status(SYS, "Display", 1, "label", "Café")
    await sock.request("bind", 1, "label")
    await sock.recv()
    text = await sock.recv_text()
    assert text == (
        '{"id":1,"type":"notify","value":"Café","meta":'
        '{"sys":"sys-room101","mod":"Display","index":1,"name":"label"}}'
    )


# -- fault switches ------------------------------------------------------------------------


async def test_out_of_order_replies(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """Replies that arrive within the window are sent in reverse order."""
    sim.out_of_order = True
    sim.out_of_order_window = 0.15
    for ident in (1, 2, 3):
        await sock.request("bind", ident, f"nothing{ident}")
    ids = [frame["id"] for frame in await sock.recv_many(3)]
    assert ids == [3, 2, 1]


async def test_out_of_order_keeps_notify_with_its_success(
    sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """A bind's initial notify travels with its success when reordered."""
    sim.out_of_order = True
    sim.out_of_order_window = 0.15
    await sock.request("bind", 1, "power")
    await sock.request("bind", 2, "nothing")
    frames = await sock.recv_many(3)
    assert [(f["id"], f["type"]) for f in frames] == [
        (2, "success"),
        (1, "success"),
        (1, "notify"),
    ]


async def test_reply_delay(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """Replies come after the delay; notifies of other changes are not delayed."""
    await sock.request("bind", 1, "volume")
    await sock.recv_many(2)
    sim.reply_delay = 0.1
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sock.request("unbind", 2, "power")
    await sim.set_status(SYS, "Display", 1, "volume", 3)
    first = await sock.recv()
    assert first["type"] == "notify"
    second = await sock.recv()
    assert second == {"id": 2, "type": "success"}
    assert loop.time() - started >= 0.09


async def test_delayed_bind_reply_carries_the_value_current_when_sent(
    sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """A held-back bind reply's initial notify is built when sent, never older than a change.

    Otherwise the change's notify would arrive first and the stale initial value after it.
    """
    sim.reply_delay = 0.1
    await sock.request("bind", 1, "volume")
    await sim.wait_for(lambda: sim.bind_requests == 1, 1.0)
    await sim.set_status(SYS, "Display", 1, "volume", 77)
    frames = await sock.recv_many(3)
    notifies = [frame["value"] for frame in frames if frame["type"] == "notify"]
    assert notifies[-1] == 77
    assert 30 not in notifies  # the demo's value before the change


async def test_drop_replies(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """drop_next_replies(n) and drop_replies swallow success/error, not the initial notify."""
    sim.drop_next_replies(1)
    await sock.request("bind", 1, "power")
    notify = await sock.recv()
    assert notify["type"] == "notify"
    await sock.request("exec", 2, "fly")
    assert (await sock.recv())["error_code"] == 1
    sim.drop_replies = True
    await sock.request("unbind", 3, "power")
    await sock.request("exec", 4, "fly")
    await sock.expect_silence(0.05)
    assert sim.replies_dropped == 3
    sim.drop_replies = False
    await sock.request("unbind", 5, "power")
    assert (await sock.recv())["id"] == 5


async def test_silent_sends_nothing_but_keeps_socket(
    sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """Silent: no pong, no reply, no notify, no protocol pong; the socket stays open."""
    await sock.request("bind", 1, "power")
    await sock.recv_many(2)
    sim.silent = True
    await sock.ws.send_str("ping")
    await sock.ws.ping()
    await sock.request("exec", 2, "power", args=[False])
    await sim.set_status(SYS, "Display", 1, "power", True)
    await sim.burst(SYS, "Display", 1, "power", [1, 2])
    await sim.inject_frame("junk")
    await sock.expect_silence(0.05)
    assert sim.connections == 1
    assert not sock.ws.closed
    sim.silent = False
    await sock.ws.send_str("ping")
    assert await sock.recv_text() == "pong"


async def test_drop_connections_without_close_frame(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """The client sees the connection end abnormally (1006), never a close frame."""
    other = await connect(session, sim)
    dropped = sim.drop_connections()
    assert dropped.count == 2
    assert "count=2" in repr(dropped)
    for raw in (sock, other):
        msg = await raw.recv_raw()
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert msg.type is not aiohttp.WSMsgType.CLOSE
        assert raw.ws.close_code == 1006
    await dropped
    assert sim.connections == 0
    assert sim.bound_keys() == set()
    # New connections are accepted as before.
    again = await connect(session, sim)
    await again.ws.send_str("ping")
    assert await again.recv_text() == "pong"
    assert sim.total_connections == 3
    await again.close()


async def test_stop_and_restart_on_same_port(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """stop(): sockets cut, listener gone; start(port=...) serves again on that port."""
    port = sim.port
    await sim.stop()
    msg = await sock.recv_raw()
    assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert not sim.running
    with pytest.raises(aiohttp.ClientConnectionError):
        await session.ws_connect(sim.ws_url, headers={"X-API-Key": "test-key"})
    await sim.stop()  # idempotent
    url = await sim.start(port=port or 0)
    assert sim.port == port
    assert url == f"http://127.0.0.1:{port}"
    raw = await connect(session, sim)
    await raw.ws.send_str("ping")
    assert await raw.recv_text() == "pong"
    await raw.close()
    with pytest.raises(RuntimeError, match="already running"):
        await sim.start()


async def test_inject_frames(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """Text, binary, raw-bytes-as-text (invalid UTF-8) and large frames reach the client."""
    await sim.inject_frame('{"type": "surprise"}')
    assert await sock.recv() == {"type": "surprise"}
    await sim.inject_frame(b"\x00\x01")
    msg = await sock.recv_raw()
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"\x00\x01")
    await sim.inject_frame("as binary", text=False)
    assert (await sock.recv_raw()).data == b"as binary"
    big = "x" * (1024 * 1024 + 1)
    delivery = sim.inject_frame(big)
    assert delivery.frames == 1
    await delivery
    msg = await sock.ws.receive(timeout=2)
    assert msg.type is aiohttp.WSMsgType.TEXT
    assert len(msg.data) == len(big)
    await sim.inject_frame(b"\xff\xfe bad utf-8", text=True)
    msg = await sock.recv_raw()
    # aiohttp's client refuses invalid UTF-8 in a text frame.
    assert msg.type is aiohttp.WSMsgType.ERROR


async def test_burst_delivers_every_value_in_order(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """burst: one notify per value, original ids, status ends at the last value."""
    other = await connect(session, sim)
    await sock.request("bind", 5, "volume")
    await other.request("bind", 6, "volume")
    await sock.recv_many(2)
    await other.recv_many(2)
    values = list(range(500))
    delivery = sim.burst(SYS, "Display", 1, "volume", values)
    assert delivery.frames == 1000
    received = [f["value"] for f in await sock.recv_many(500)]
    assert received == values
    assert {f["id"] for f in await other.recv_many(500)} == {6}
    await delivery
    assert sim.get_status(SYS, "Display", 1, "volume") == 499
    await sim.burst(SYS, "Display", 1, "volume", [7, None])
    assert [f["value"] for f in await sock.recv_many(2)] == [7, None]
    assert sim.get_status(SYS, "Display", 1, "volume") is None
    assert sim.burst(SYS, "Display", 1, "volume", []).frames == 0
    assert sim.burst(SYS, "Display", 1, "unbound", [1]).frames == 0
    await other.close()


async def test_delivery_resolves_when_socket_is_gone(
    sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """Awaiting a delivery to a socket that was cut does not hang."""
    await sock.request("bind", 1, "volume")
    await sock.recv_many(2)
    delivery = sim.burst(SYS, "Display", 1, "volume", range(20000))
    sim.drop_connections()
    await asyncio.wait_for(delivery, 1)
    await sim.wait_for(lambda: sim.connections == 0, timeout=1)


async def test_binary_frame_to_a_cut_socket_is_dropped(
    sim: PlaceOSSimulator, sock: RawSocket
) -> None:
    """A frame queued just after the TCP abort ends that socket's writer quietly."""
    dropped = sim.drop_connections()
    delivery = sim.inject_frame(b"late")
    assert delivery.frames == 1
    await asyncio.wait_for(delivery, 1)
    await dropped
    assert sim.connections == 0


# -- debug / ignore ------------------------------------------------------------------------


async def test_debug_and_ignore(sim: PlaceOSSimulator, sock: RawSocket) -> None:
    """debug with a module id streams debug frames (exec emits one) until ignore."""
    await sock.request("debug", 1, "debug", mod="mod-disp0101")
    assert await sock.recv() == {"id": 1, "type": "success"}
    await sock.request("debug", 2, "debug", mod="mod-disp0101")  # again: success, same stream
    assert await sock.recv() == {"id": 2, "type": "success"}
    await sim.emit_debug("mod-disp0101", "hello", "warn")
    assert await sock.recv() == {
        "id": 1,
        "type": "debug",
        "msg": "hello",
        "meta": {"sys": SYS, "mod": "mod-disp0101", "index": 1, "name": "debug"},
        "mod": "mod-disp0101",
        "level": "warn",
    }
    await sock.request("exec", 3, "power", args=[True])
    debug = await sock.recv()
    assert (debug["type"], debug["msg"], debug["level"]) == ("debug", "exec power(true)", "debug")
    assert (await sock.recv())["id"] == 3
    await sock.request("ignore", 4, "debug", mod="mod-disp0101")
    assert await sock.recv() == {"id": 4, "type": "success"}
    assert sim.emit_debug("mod-disp0101", "unheard").frames == 0
    await sock.request("ignore", 5, "debug", mod="mod-disp0101")
    assert await sock.recv() == {"id": 5, "type": "success"}
    await sock.request("debug", 6, "debug", mod="mod-unknown")
    frame = await sock.recv()
    assert (frame["error_code"], frame["msg"]) == (7, "failed to attach debugger")
    with pytest.raises(ValueError, match="level"):
        sim.emit_debug("mod-disp0101", "x", "loud")
    assert sim.debug_requests == 5


async def test_debug_listener_removed_on_close(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """Closing a debugging socket removes its debug subscription."""
    raw = await connect(session, sim)
    await raw.request("debug", 1, "debug", mod="mod-disp0101")
    await raw.recv()
    await raw.close()
    await sim.wait_for(lambda: sim.connections == 0, timeout=1)
    assert sim.emit_debug("mod-disp0101", "x").frames == 0


# -- observation ---------------------------------------------------------------------------


async def test_counters_requests_log_and_wait_for(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """Counters move; wait_for/wait_connections wait and time out."""
    waiter = asyncio.ensure_future(sim.wait_connections(2, timeout=1))
    first = await connect(session, sim)
    second = await connect(session, sim)
    await waiter
    assert (sim.connections, sim.total_connections) == (2, 2)
    await first.request("bind", 1, "power")
    await sim.wait_for(lambda: sim.bind_requests == 1, timeout=1)
    assert sim.requests[-1].name == "power"
    with pytest.raises(TimeoutError):
        await sim.wait_for(lambda: sim.bind_requests == 5, timeout=0.02)
    await first.close()
    await second.close()
    await sim.wait_for(lambda: sim.connections == 0, timeout=1)
    await settle()
    assert sim.frames_received == 1


async def test_context_manager_and_url_before_start(socket_enabled: None) -> None:
    """`async with` starts and stops; url needs a started simulator."""
    sim = PlaceOSSimulator()
    with pytest.raises(RuntimeError, match="not been started"):
        _ = sim.url
    async with sim as running:
        assert running.running
        assert running.ws_url.startswith("ws://127.0.0.1:")
        assert running.ws_url.endswith("/api/engine/v2/systems/control")
    assert not sim.running
