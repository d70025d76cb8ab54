"""PlaceOSApi against the simulator's REST API, plus a small server for odd answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
import json
from typing import Any

import aiohttp
from aiohttp import web
import pytest

from custom_components.placeos.client import (
    Authority,
    PlaceOSApi,
    PlaceOSAuthError,
    PlaceOSConnectionError,
    PlaceOSForbiddenError,
    PlaceOSTimeoutError,
    PlaceOSTLSError,
)
from custom_components.placeos.client.rest import MAX_PAGES
from placeos_sim import PlaceOSSimulator, Scenario
from placeos_sim.scenario import demo_data

from .conftest import API_KEY


@pytest.fixture
def api(session: aiohttp.ClientSession, sim: PlaceOSSimulator) -> PlaceOSApi:
    """A REST client for the demo building."""
    return PlaceOSApi(session, sim.url, API_KEY, timeout=2)


async def test_authority_needs_no_key(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """The instance identity is public: a wrong key does not matter."""
    api = PlaceOSApi(session, sim.url, "wrong-key")
    authority = await api.authority()
    assert authority == Authority(
        id="authority-demo0001",
        name="Demo Building",
        domain="localhost",
        version="3.12.0",
        description="PlaceOS simulator demo building",
        production=False,
    )
    assert authority.is_v2


async def test_current_user_and_auth_errors(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator, api: PlaceOSApi
) -> None:
    """A good key reads its user; 401 and 403 map to the auth errors, without the key."""
    user = await api.current_user()
    assert user["id"] == "user-demo0001"
    with pytest.raises(PlaceOSAuthError) as caught:
        await PlaceOSApi(session, sim.url, "secret-wrong-key").current_user()
    assert type(caught.value) is PlaceOSAuthError
    assert caught.value.status == 401
    assert "secret-wrong-key" not in str(caught.value)
    sim.add_key("scoped-key", scopes_ok=False)
    with pytest.raises(PlaceOSForbiddenError) as forbidden:
        await PlaceOSApi(session, sim.url, "scoped-key").systems()
    assert forbidden.value.status == 403


async def test_systems_listing_and_filters(api: PlaceOSApi) -> None:
    """Systems come as models; search, zone filter and limit are passed on."""
    systems = await api.systems()
    assert [system.id for system in systems] == ["sys-room101", "sys-room102", "sys-lobby1"]
    assert systems[0].label == "Boardroom"
    assert systems[0].module_ids[0] == "mod-disp0101"
    assert [s.id for s in await api.systems(q="Room 1.02")] == ["sys-room102"]
    assert await api.systems(zone_id="zone-nowhere") == []
    assert len(await api.systems(zone_id="zone-lvl0001")) == 3
    assert [s.id for s in await api.systems(limit=2)] == ["sys-room101", "sys-room102"]


async def test_systems_paging_follows_link(
    socket_enabled: None, session: aiohttp.ClientSession
) -> None:
    """A listing longer than a page is fetched page by page until X-Total-Count."""
    data = demo_data()
    template = data["systems"][2]
    data["systems"] = [
        {**template, "id": f"sys-{n:03d}", "name": f"Room {n:03d}", "modules": []}
        for n in range(250)
    ]
    sim = PlaceOSSimulator(Scenario.from_dict(data))
    await sim.start()
    try:
        api = PlaceOSApi(session, sim.url, API_KEY)
        before = sim.rest_requests
        systems = await api.systems()
        assert [s.id for s in systems] == [f"sys-{n:03d}" for n in range(250)]
        assert sim.rest_requests - before == 3
        limited = await api.systems(limit=150)
        assert len(limited) == 150
        assert len({s.id for s in limited}) == 150
    finally:
        await sim.stop()


async def test_system_with_modules(api: PlaceOSApi) -> None:
    """`system()` numbers modules by binding name, custom names included."""
    system = await api.system("sys-room101")
    assert system.name == "Room 1.01 Boardroom"
    labels = [module.label for module in system.modules]
    assert labels == [
        "Display_1",
        "Display_2",
        "Lighting_1",
        "Bookings_1",
        "Occupancy_1",
        "_Admin_1",
    ]
    second = system.modules[1]
    assert (second.name, second.custom_name, second.id) == (
        "Samsung Display",
        "Display",
        "mod-disp0102",
    )
    assert second.driver_name == "Samsung MD, DB & DM Series LCD"


async def test_types_state_status_functions(api: PlaceOSApi) -> None:
    """Module names, decoded state, one status and the method list."""
    assert await api.types("sys-room101") == {
        "Display": 2,
        "Lighting": 1,
        "Bookings": 1,
        "Occupancy": 1,
        "_Admin": 1,
    }
    state = await api.module_state("sys-room101", "Display", 1)
    assert state == {"power": True, "volume": 30, "input": "hdmi", "mute": False}
    bookings = await api.module_state("sys-room101", "Bookings", 1)
    assert bookings["bookings"][0]["id"] == "evt-1"
    assert await api.status("sys-room101", "Display", 2, "input") == "hdmi2"
    assert await api.status("sys-room101", "Display", 1, "missing") is None
    functions = await api.functions("sys-room101", "Display", 1)
    assert set(functions) >= {"power", "volume", "input", "mute"}


async def test_zones(api: PlaceOSApi) -> None:
    """Zones with tags and parents; search is passed on."""
    zones = await api.zones()
    assert [zone.id for zone in zones] == ["zone-org0001", "zone-bld0001", "zone-lvl0001"]
    assert zones[1].parent_id == "zone-org0001"
    assert zones[2].tags == ["level"]
    assert [zone.id for zone in await api.zones(q="Level")] == ["zone-lvl0001"]


async def test_not_found_and_path_encoding(api: PlaceOSApi, sim: PlaceOSSimulator) -> None:
    """Unknown ids give PlaceOSConnectionError with the status; ids cannot alter the path."""
    with pytest.raises(PlaceOSConnectionError) as caught:
        await api.system("sys-nowhere")
    assert caught.value.status == 404
    with pytest.raises(PlaceOSConnectionError) as traversal:
        await api.system("../users/current")
    assert traversal.value.status == 404


async def test_tls(socket_enabled: None, session: aiohttp.ClientSession) -> None:
    """Self-signed: PlaceOSTLSError with verification, success without."""
    from placeos_sim.tls import self_signed_ssl_context

    sim = PlaceOSSimulator(ssl_context=self_signed_ssl_context())
    await sim.start()
    try:
        with pytest.raises(PlaceOSTLSError):
            await PlaceOSApi(session, sim.url, API_KEY).authority()
        relaxed = PlaceOSApi(session, sim.url, API_KEY, verify_ssl=False)
        assert (await relaxed.authority()).id == "authority-demo0001"
        assert len(await relaxed.systems()) == 3
    finally:
        await sim.stop()


async def test_connection_refused(session: aiohttp.ClientSession, sim: PlaceOSSimulator) -> None:
    """Nothing listening: PlaceOSConnectionError."""
    url = sim.url
    await sim.stop()
    with pytest.raises(PlaceOSConnectionError, match="failed"):
        await PlaceOSApi(session, url, API_KEY).authority()


# ---------------------------------------------------------------------------- odd servers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ServeFactory = Callable[[dict[str, Handler]], Awaitable[str]]


@pytest.fixture
async def serve(socket_enabled: None) -> AsyncIterator[ServeFactory]:
    """Serve a few handlers by path on 127.0.0.1; returns the base URL."""
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler]) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _json(body: Any, headers: dict[str, str] | None = None, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body), headers=headers, status=status, content_type="application/json"
    )


async def test_paging_by_offset_without_link(
    session: aiohttp.ClientSession, serve: ServeFactory
) -> None:
    """Without Link headers, offset advances until X-Total-Count (or a short page)."""
    seen: list[dict[str, str]] = []

    async def zones(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        offset = int(request.query["offset"])
        items = [
            {"id": f"zone-{n}", "name": f"Z{n}"} for n in range(offset, min(offset + 100, 230))
        ]
        return _json(items, {"X-Total-Count": "230"})

    async def systems(request: web.Request) -> web.Response:
        # No count either: a short page ends the listing.
        offset = int(request.query["offset"])
        count = 100 if offset == 0 else 5
        return _json([{"id": f"sys-{offset + n}"} for n in range(count)])

    api = PlaceOSApi(
        session,
        await serve({"/api/engine/v2/zones": zones, "/api/engine/v2/systems": systems}),
        "k",
    )
    zones_found = await api.zones(q="Z")
    assert len(zones_found) == 230
    assert [entry["offset"] for entry in seen] == ["0", "100", "200"]
    assert all(entry["q"] == "Z" and entry["limit"] == "100" for entry in seen)
    assert len(await api.systems()) == 105


async def test_paging_stops_on_empty_page_cap_and_foreign_links(
    session: aiohttp.ClientSession, serve: ServeFactory
) -> None:
    """An endless server stops at the page cap; a Link to another host is not followed."""
    calls = {"zones": 0, "systems": 0}
    keys_sent: list[str | None] = []

    async def endless(request: web.Request) -> web.Response:
        calls["zones"] += 1
        offset = request.query.get("offset", "0")
        return _json(
            [{"id": f"zone-{offset}-{calls['zones']}"}],
            {"Link": '</api/engine/v2/zones?offset=1>; rel="next"', "X-Total-Count": "999999"},
        )

    async def foreign(request: web.Request) -> web.Response:
        calls["systems"] += 1
        keys_sent.append(request.headers.get("X-API-Key"))
        if calls["systems"] > 1:
            return _json([], {"X-Total-Count": "2"})  # empty page: the end
        return _json(
            [{"id": "sys-1"}, {"no": "id"}, "junk"],
            {"Link": '<https://evil.example/steal>; rel="next"', "X-Total-Count": "5"},
        )

    base = await serve({"/api/engine/v2/zones": endless, "/api/engine/v2/systems": foreign})
    api = PlaceOSApi(session, base, "the-key")
    assert len(await api.zones()) == MAX_PAGES
    assert calls["zones"] == MAX_PAGES
    systems = await api.systems()
    assert [s.id for s in systems] == ["sys-1"]  # malformed entries skipped
    assert calls["systems"] == 2  # fell back to offset paging on this host
    assert keys_sent == ["the-key", "the-key"]


async def test_unexpected_answers(session: aiohttp.ClientSession, serve: ServeFactory) -> None:
    """Redirects, non-JSON, wrong shapes and server errors become PlaceOSConnectionError."""

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=301, headers={"Location": "https://elsewhere.example/"})

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>login</html>", content_type="text/html")

    async def wrong_shape(request: web.Request) -> web.Response:
        return _json(["not", "an", "object"])

    async def not_a_list(request: web.Request) -> web.Response:
        return _json({"results": []})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def types(request: web.Request) -> web.Response:
        return _json({"Display": 2, "Weird": "x"})

    async def bad_system(request: web.Request) -> web.Response:
        return _json({"name": "no id"})

    base = await serve(
        {
            "/auth/authority": redirect,
            "/api/engine/v2/users/current": html,
            "/api/engine/v2/systems/sys-1/functions/Display_1": wrong_shape,
            "/api/engine/v2/zones": not_a_list,
            "/api/engine/v2/systems/sys-1/Display_1": broken,
            "/api/engine/v2/systems/sys-1/types": types,
            "/api/engine/v2/systems/sys-1": bad_system,
        }
    )
    api = PlaceOSApi(session, base, "k")
    assert api.url == base
    assert "k" not in repr(api).replace("ok", "")
    with pytest.raises(PlaceOSConnectionError, match=r"elsewhere\.example") as redirected:
        await api.authority()
    assert redirected.value.status == 301
    with pytest.raises(PlaceOSConnectionError, match="did not return JSON"):
        await api.current_user()
    with pytest.raises(PlaceOSConnectionError, match="expected a JSON object"):
        await api.functions("sys-1", "Display", 1)
    with pytest.raises(PlaceOSConnectionError, match="not a list"):
        await api.zones()
    with pytest.raises(PlaceOSConnectionError) as failed:
        await api.module_state("sys-1", "Display", 1)
    assert failed.value.status == 500
    assert await api.types("sys-1") == {"Display": 2}
    with pytest.raises(PlaceOSConnectionError, match="unexpected system response"):
        await api.system("sys-1")


async def test_timeout(session: aiohttp.ClientSession, serve: ServeFactory) -> None:
    """A server that does not answer in time gives PlaceOSTimeoutError."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return _json({})

    api = PlaceOSApi(session, await serve({"/auth/authority": slow}), "k", timeout=0.05)
    try:
        with pytest.raises(PlaceOSTimeoutError, match="no answer"):
            await api.authority()
    finally:
        release.set()
