"""Regressions found by the fault campaign (tests/reliability), at the client level.

Both are binds that got no reply in time on a socket that stays open. Before the fix the client
gave up on them until the next reconnect, and the entity kept a wrong value for as long as the
socket lived.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct

import aiohttp
from aiohttp import web
import pytest

from custom_components.placeos.client import ConnectionState
from placeos_sim import PlaceOSSimulator

from .conftest import FAST, POWER, VOLUME, Factory, until

ROOM = "sys-room101"


async def test_late_bind_reply_is_followed_by_a_fresh_bind(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """A bind answered after its timeout is refreshed (unbind, bind) and ends at the current value.

    Campaign fault `reply_delayed`: the entity showed `v40` while the simulator had `true`. (The
    simulator then built a held reply's initial notify early, so a change overtook it; it now
    builds it when sent, as a server would, but the client must not rely on reply order.)
    """
    harness = make_client()
    harness.bind(VOLUME)
    await harness.connected()
    await until(lambda: harness.has(VOLUME, 30))

    # Late by half a timeout: it lands before the refresh, one timeout after CONNECTED.
    sim.reply_delay = FAST["request_timeout"] * 1.5
    sim.drop_connections()
    await harness.reconnected(2)  # CONNECTED once the bind timed out
    sim.set_status(ROOM, "Display", 1, "volume", 77)
    sim.reply_delay = 0.0
    await until(lambda: harness.client.diagnostics()["replies_unmatched"] >= 1)  # the late reply

    diagnostics = harness.client.diagnostics
    await until(
        lambda: diagnostics()["bind_refreshes"] == 1 and diagnostics()["pending_requests"] == 0
    )
    assert harness.values[VOLUME][-1] == 77
    assert diagnostics()["bindings_to_refresh"] == 0
    assert sim.subscribers(ROOM, "Display", 1, "volume") == 1


async def test_leftovers_of_a_refreshed_binding_are_dropped(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """An initial notify that arrives after the refresh confirmed its binding gone is dropped.

    Campaign fault `reply_delayed` with a long delay: the delayed initial notify came after the
    refresh's fresh value and replaced it with an old one.
    """
    harness = make_client()
    harness.bind(VOLUME)
    await harness.connected()

    # Late by two timeouts: it lands after the refresh (one timeout after CONNECTED).
    sim.reply_delay = FAST["request_timeout"] * 3
    sim.drop_connections()
    await harness.reconnected(2)
    sim.set_status(ROOM, "Display", 1, "volume", 77)
    sim.reply_delay = 0.0
    diagnostics = harness.client.diagnostics
    await until(lambda: diagnostics()["bind_refreshes"] == 1 and harness.has(VOLUME, 77))
    await until(lambda: diagnostics()["replies_unmatched"] >= 1, timeout=3)  # the leftovers
    assert diagnostics()["notifies_superseded"] == 1
    assert harness.has(VOLUME, 77)
    sim.set_status(ROOM, "Display", 1, "volume", 78)  # the new binding carries on
    await until(lambda: harness.has(VOLUME, 78))


async def test_unanswered_bind_is_retried_on_the_live_socket(
    make_client: Factory, sim: PlaceOSSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Binds whose replies (and initial notifies) never came are retried without a reconnect.

    Campaign fault `reply_never` (server silent during the resync, then fine again): the value
    set during the fault never reached the entity.
    """
    caplog.set_level(logging.DEBUG, logger="custom_components.placeos.client")
    harness = make_client()
    harness.bind(POWER, VOLUME)
    await harness.connected()
    await until(lambda: len(harness.values) == 2)

    sim.silent = True
    sim.set_status(ROOM, "Display", 1, "volume", 55)  # notify lost in the silence
    binds_before = sim.bind_requests
    sim.drop_connections()
    await sim.wait_for(lambda: sim.bind_requests == binds_before + 2)
    sim.silent = False  # the socket carries on, but those replies and notifies are gone

    await until(lambda: harness.has(VOLUME, 55))
    assert harness.client.diagnostics()["connects"] == 2  # no reconnect was needed
    assert harness.client.state is ConnectionState.CONNECTED
    assert harness.has(POWER, True)
    assert sim.subscribers(ROOM, "Display", 1, "volume") == 1
    assert "Refreshing 2 PlaceOS bindings" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


async def test_refresh_backs_off_while_replies_never_come(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """Replies that never come: refreshes are spaced out and wait longer each time, the
    binding keeps working, and a binding removed meanwhile is not bound again."""
    harness = make_client(request_timeout=0.05, dead_after=5.0, backoff_max=0.4)
    harness.bind(POWER, VOLUME)
    sim.drop_replies = True
    await harness.connected()
    harness.client.remove_bindings([POWER])
    diagnostics = harness.client.diagnostics
    loop = asyncio.get_running_loop()
    begin = loop.time()
    await until(lambda: diagnostics()["bind_refreshes"] >= 3, timeout=5)
    # Waits 0.05, 0.05-0.1, 0.1-0.2 s and reply timeouts 0.05, 0.1, 0.2 s: at least 0.5 s.
    assert loop.time() - begin >= 0.5
    assert sim.bind_requests <= 2 + diagnostics()["bind_refreshes"]
    assert sim.subscribers(ROOM, "Display", 1, "power") == 0
    # The unbind goes unconfirmed, so the bind follows anyway: volume stays bound.
    await until(lambda: sim.subscribers(ROOM, "Display", 1, "volume") == 1)
    sim.set_status(ROOM, "Display", 1, "volume", 31)
    await until(lambda: harness.has(VOLUME, 31))


async def test_a_frame_slower_than_dead_after_is_not_cut_off(
    make_client: Factory, socket_enabled: None
) -> None:
    """Bytes arriving are a sign of life: a 1 MiB notify that trickles in over three dead_after
    windows is received, not cut off (and sent again after the re-bind, forever).

    Campaign fault `frame_oversized` on a loaded machine: "nothing received for 0.6 s" while a
    megabyte-sized notify was arriving, every time, until the recovery bound.
    """
    dead_after = FAST["dead_after"]
    big = "x" * (1 << 20)
    meta = {"sys": ROOM, "mod": "Display", "index": 1, "name": "volume"}
    payload = json.dumps({"id": 1, "type": "notify", "value": big, "meta": meta}).encode()
    connections = 0

    async def trickle(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        connections += 1
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        transport.write(struct.pack("!BBQ", 0x81, 127, len(payload)))  # one final TEXT frame
        step = len(payload) // 30 + 1
        for start in range(0, len(payload), step):
            if transport.is_closing():  # cut off by the client
                return ws
            transport.write(payload[start : start + step])
            await asyncio.sleep(dead_after / 10)
        async for message in ws:  # from now on a plain server: pings get their pong
            if message.type is aiohttp.WSMsgType.TEXT and message.data == "ping":
                await ws.send_str("pong")
        return ws

    app = web.Application()
    app.router.add_get("/api/engine/v2/systems/control", trickle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    harness = make_client(f"http://127.0.0.1:{port}")
    harness.bind(VOLUME)
    harness.start()
    try:
        await until(lambda: harness.has(VOLUME, big), timeout=5)
        assert connections == 1
        assert harness.client.diagnostics()["connects"] == 1
    finally:
        await harness.client.close()
        await runner.cleanup()


async def test_byte_liveness_falls_back_to_frames_on_other_aiohttp_internals(
    make_client: Factory, sim: PlaceOSSimulator
) -> None:
    """Counting bytes needs aiohttp internals; where they differ, the client still connects
    and complete frames alone keep the socket alive."""
    harness = make_client()

    class Protocol:
        __slots__ = ()

        def data_received(self, data: bytes) -> None:
            """Read-only on instances: no __dict__."""

    class Connection:
        protocol = Protocol()

    class Socket:
        _conn = Connection()

    for ws in (object(), Socket()):
        undo = harness.client._watch_bytes(ws)  # type: ignore[arg-type]
        undo()  # nothing to undo, nothing raised
    harness.bind(VOLUME)
    await harness.connected()
    await until(lambda: harness.has(VOLUME, 30))
