"""Discovery REST API of the simulator (protocol §5)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from yarl import URL

from placeos_sim import PlaceOSSimulator, Scenario, System
from tests.sim.helpers import SYS

API = "/api/engine/v2"
KEY = {"X-API-Key": "test-key"}
ADMIN = {"X-API-Key": "admin-key"}


async def _get(
    session: aiohttp.ClientSession,
    sim: PlaceOSSimulator,
    path: str,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> tuple[int, Any, Any]:
    async with session.get(
        sim.url + path, headers=KEY if headers is None else headers, params=params or None
    ) as resp:
        body = await resp.read()
        return resp.status, (json.loads(body) if body else None), resp.headers


async def test_authority_needs_no_credentials(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """/auth/authority at the site root, without a key."""
    status, body, _ = await _get(session, sim, "/auth/authority", headers={})
    assert status == 200
    assert body["id"].startswith("authority-")
    assert body["name"] == "Demo Building"
    assert body["domain"] == "localhost"
    assert body["version"] == "3.12.0"
    assert {"description", "production", "config", "login_url"} <= body.keys()


async def test_auth_failures(session: aiohttp.ClientSession, sim: PlaceOSSimulator) -> None:
    """Same 401 (JSON) / 403 (empty) as the socket; other credential paths work too."""
    status, body, _ = await _get(session, sim, f"{API}/users/current", headers={})
    assert status == 401
    assert "error" in body
    status, body, _ = await _get(session, sim, f"{API}/systems", headers={"X-API-Key": "bad"})
    assert status == 401
    assert "error" in body
    sim.add_key("scopeless", scopes_ok=False)
    status, body, _ = await _get(session, sim, f"{API}/systems", headers={"X-API-Key": "scopeless"})
    assert (status, body) == (403, None)
    status, _, _ = await _get(
        session, sim, f"{API}/systems", headers={"Authorization": "Bearer test-key"}
    )
    assert status == 200
    assert sim.rest_requests == 4


async def test_current_user(session: aiohttp.ClientSession, sim: PlaceOSSimulator) -> None:
    """The key owner's record, with admin flags from the key."""
    status, body, _ = await _get(session, sim, f"{API}/users/current")
    assert status == 200
    assert body["id"] == "user-demo0001"
    assert body["authority_id"] == "authority-demo0001"
    assert (body["sys_admin"], body["support"]) == (False, False)
    _, admin, _ = await _get(session, sim, f"{API}/users/current", headers=ADMIN)
    assert admin["sys_admin"] is True


async def test_list_systems_search_and_zone(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """q matches name substrings/prefixes case-insensitively; zone_id filters."""
    status, body, headers = await _get(session, sim, f"{API}/systems")
    assert status == 200
    assert [s["name"] for s in body] == [
        "Room 1.01 Boardroom",
        "Room 1.02 Huddle",
        "Level 1 Lobby",
    ]
    assert headers["X-Total-Count"] == "3"
    assert "Link" not in headers
    first = body[0]
    assert first["id"] == SYS
    assert first["modules"][0] == "mod-disp0101"
    assert {"display_name", "description", "zones"} <= first.keys()
    _, body, headers = await _get(session, sim, f"{API}/systems", q="room")
    assert [s["id"] for s in body] == ["sys-room101", "sys-room102"]
    assert headers["X-Total-Count"] == "2"
    _, body, _ = await _get(session, sim, f"{API}/systems", q="hud*")
    assert [s["name"] for s in body] == ["Room 1.02 Huddle"]
    _, body, _ = await _get(session, sim, f"{API}/systems", q="lobby", zone_id="zone-lvl0001")
    assert [s["id"] for s in body] == ["sys-lobby1"]
    _, body, _ = await _get(session, sim, f"{API}/systems", zone_id="zone-none")
    assert body == []


async def test_systems_paging_headers(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """limit/offset page the list; Link rel=next points at the next page until the end."""
    for number in range(250):
        sim.scenario.systems.append(System(id=f"sys-extra{number:03d}", name=f"Extra {number}"))
    status, body, headers = await _get(session, sim, f"{API}/systems")
    assert status == 200
    assert len(body) == 100  # default limit
    assert headers["X-Total-Count"] == "253"
    seen: list[str] = [s["id"] for s in body]
    link = headers["Link"]
    while link:
        target, rel = link.split(";")
        assert rel.strip() == 'rel="next"'
        async with session.get(URL(sim.url).join(URL(target.strip("<> "))), headers=KEY) as resp:
            seen.extend(s["id"] for s in await resp.json())
            link = resp.headers.get("Link", "")
    assert len(seen) == 253
    assert len(set(seen)) == 253
    _, body, headers = await _get(
        session, sim, f"{API}/systems", q="extra", limit="10", offset="240"
    )
    assert [s["name"] for s in body] == [f"Extra {n}" for n in range(240, 250)]
    assert "Link" not in headers
    _, _, headers = await _get(session, sim, f"{API}/systems", q="extra", limit="10")
    link_url = URL(headers["Link"].split(";")[0].strip("<>"))
    assert link_url.path == f"{API}/systems"
    assert dict(link_url.query) == {"q": "extra", "limit": "10", "offset": "10"}
    for bad in ("x", "-1"):
        status, body, _ = await _get(session, sim, f"{API}/systems", limit=bad)
        assert status == 400
        assert "error" in body


async def test_one_system_complete(session: aiohttp.ClientSession, sim: PlaceOSSimulator) -> None:
    """?complete=true adds module_data (binding name inputs) and zone_data."""
    status, body, _ = await _get(session, sim, f"{API}/systems/{SYS}")
    assert status == 200
    assert body["name"] == "Room 1.01 Boardroom"
    assert "module_data" not in body
    _, body, _ = await _get(session, sim, f"{API}/systems/{SYS}", complete="true")
    modules = body["module_data"]
    assert [m["id"] for m in modules] == body["modules"]
    second = modules[1]
    assert (second["name"], second["custom_name"]) == ("Samsung Display", "Display")
    assert second["driver"]["module_name"] == "Display"
    assert second["driver"]["name"] == "Samsung MD, DB & DM Series LCD"
    assert second["connected"] is True
    assert modules[0]["custom_name"] is None
    assert [z["id"] for z in body["zone_data"]] == body["zones"]
    status, body, _ = await _get(session, sim, f"{API}/systems/sys-nope")
    assert status == 404
    assert "error" in body


async def test_types_state_status_functions(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """types counts binding names; module state is stringified; one status is parsed."""
    _, types, _ = await _get(session, sim, f"{API}/systems/{SYS}/types")
    assert types == {
        "Display": 2,
        "Lighting": 1,
        "Bookings": 1,
        "Occupancy": 1,
        "_Admin": 1,
    }
    status, state, _ = await _get(session, sim, f"{API}/systems/{SYS}/Display_2")
    assert status == 200
    assert state == {"power": "false", "volume": "20", "input": '"hdmi2"', "mute": "false"}
    _, bookings, _ = await _get(session, sim, f"{API}/systems/{SYS}/Bookings_1")
    assert isinstance(json.loads(bookings["bookings"]), list)
    _, no_index, _ = await _get(session, sim, f"{API}/systems/{SYS}/Lighting")
    assert no_index == {"level": "70", "scene": '"meeting"'}
    _, value, _ = await _get(session, sim, f"{API}/systems/{SYS}/Display_1/volume")
    assert value == 30
    sim.set_status(SYS, "Display", 1, "volume", 12)
    _, value, _ = await _get(session, sim, f"{API}/systems/{SYS}/Display_1/volume")
    assert value == 12
    status, value, _ = await _get(session, sim, f"{API}/systems/{SYS}/Display_1/nothing")
    assert (status, value) == (200, None)
    for path in (
        f"{SYS}/Display_3",
        f"{SYS}/Display_3/power",
        "sys-nope/Display_1",
        f"{SYS}/functions/Nope_1",
    ):
        status, body, _ = await _get(session, sim, f"{API}/systems/{path}")
        assert status == 404, path
        assert "error" in body
    status, _, _ = await _get(session, sim, f"{API}/systems/sys-nope/types")
    assert status == 404
    _, functions, _ = await _get(session, sim, f"{API}/systems/{SYS}/functions/Display_1")
    assert functions["power"] == {"arity": 1, "params": {"state": ["Bool"]}, "order": ["state"]}
    assert set(functions) == {"power", "volume", "input", "mute"}
    _, hidden, _ = await _get(session, sim, f"{API}/systems/{SYS}/functions/_Admin_1")
    assert hidden == {}
    _, shown, _ = await _get(session, sim, f"{API}/systems/{SYS}/functions/_Admin_1", headers=ADMIN)
    assert set(shown) == {"restart", "set_debug"}


async def test_zones(session: aiohttp.ClientSession, sim: PlaceOSSimulator) -> None:
    """Zones list with q/tags/parent_id, paging headers, and one zone by id."""
    status, zones, headers = await _get(session, sim, f"{API}/zones")
    assert status == 200
    assert [z["id"] for z in zones] == ["zone-org0001", "zone-bld0001", "zone-lvl0001"]
    assert headers["X-Total-Count"] == "3"
    assert {"name", "tags", "parent_id"} <= zones[0].keys()
    _, zones, _ = await _get(session, sim, f"{API}/zones", q="level")
    assert [z["id"] for z in zones] == ["zone-lvl0001"]
    _, zones, _ = await _get(session, sim, f"{API}/zones", tags="building,org")
    assert [z["id"] for z in zones] == ["zone-org0001", "zone-bld0001"]
    _, zones, _ = await _get(session, sim, f"{API}/zones", parent_id="zone-bld0001")
    assert [z["id"] for z in zones] == ["zone-lvl0001"]
    _, zones, headers = await _get(session, sim, f"{API}/zones", limit="1")
    assert len(zones) == 1
    assert 'rel="next"' in headers["Link"]
    status, zone, _ = await _get(session, sim, f"{API}/zones/zone-bld0001")
    assert (status, zone["name"]) == (200, "Building 1")
    status, _, _ = await _get(session, sim, f"{API}/zones/zone-nope")
    assert status == 404


@pytest.mark.parametrize("limit", ["0"])
async def test_limit_zero_returns_nothing_without_link(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator, limit: str
) -> None:
    """limit=0: empty page, total still reported, no next link."""
    _, body, headers = await _get(session, sim, f"{API}/systems", limit=limit)
    assert body == []
    assert headers["X-Total-Count"] == "3"
    assert "Link" not in headers


async def test_rest_serves_a_loaded_scenario(
    session: aiohttp.ClientSession, socket_enabled: None
) -> None:
    """A scenario from a dict is what the REST API returns."""
    scenario = Scenario.from_dict(
        {"systems": [{"id": "sys-a", "name": "A", "modules": [{"name": "Switcher"}]}]}
    )
    async with PlaceOSSimulator(scenario) as sim:
        status, body, _ = await _get(session, sim, f"{API}/systems/sys-a/types")
        assert (status, body) == (200, {"Switcher": 1})
        _, authority, _ = await _get(session, sim, "/auth/authority")
        assert authority["id"] == "authority-sim"
