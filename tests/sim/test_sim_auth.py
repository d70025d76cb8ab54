"""Handshake authentication of the control WebSocket (protocol §1)."""

from __future__ import annotations

import aiohttp
import pytest
from yarl import URL

from placeos_sim import CONTROL_PATH, PlaceOSSimulator
from tests.sim.helpers import connect, handshake_status


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("header", "test-key"),
        ("query", "test-key"),
        ("cookie", "test-key"),
        ("bearer", "test-key"),
        ("bearer_query", "test-key"),
        ("bearer_cookie", "test-key"),
    ],
)
async def test_every_credential_path_is_accepted(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator, where: str, key: str
) -> None:
    """X-API-Key, api-key query/cookie, Bearer header, bearer_token query/cookie all work."""
    url = URL(sim.ws_url)
    headers: dict[str, str] = {}
    if where == "header":
        headers["X-API-Key"] = key
    elif where == "query":
        url = url.with_query({"api-key": key})
    elif where == "cookie":
        headers["Cookie"] = f"api-key={key}"
    elif where == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    elif where == "bearer_query":
        url = url.with_query({"bearer_token": key})
    else:
        headers["Cookie"] = f"bearer_token={key}"
    ws = await session.ws_connect(url, headers=headers)
    await ws.send_str("ping")
    assert (await ws.receive(timeout=1)).data == "pong"
    await ws.close()
    assert sim.total_connections == 1


async def test_first_match_wins(session: aiohttp.ClientSession, sim: PlaceOSSimulator) -> None:
    """A bad X-API-Key is not rescued by a good bearer token or query key."""
    url = URL(sim.ws_url).with_query({"api-key": "test-key"})
    status = await handshake_status(
        session,
        sim,
        headers={"X-API-Key": "wrong", "Authorization": "Bearer test-key"},
    )
    assert status == 401
    # The query key comes before the bearer header.
    ws_status = 101
    try:
        ws = await session.ws_connect(url, headers={"Authorization": "Bearer wrong"})
        await ws.close()
    except aiohttp.WSServerHandshakeError as err:
        ws_status = err.status
    assert ws_status == 101
    url_bad = URL(sim.ws_url).with_query({"api-key": "wrong"})
    with pytest.raises(aiohttp.WSServerHandshakeError) as err_info:
        await session.ws_connect(url_bad, headers={"Authorization": "Bearer test-key"})
    assert err_info.value.status == 401


async def test_unknown_key_gets_401_with_json_error(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """Unknown key: 401 and a JSON body with an `error` string; also without any credential."""
    headers = {"X-API-Key": "nope", "Connection": "Upgrade", "Upgrade": "websocket"}
    async with session.get(sim.url + CONTROL_PATH, headers=headers) as resp:
        assert resp.status == 401
        body = await resp.json()
        assert isinstance(body["error"], str)
        assert body["error"]
        assert "nope" not in body["error"]
    async with session.get(sim.url + CONTROL_PATH) as resp:
        assert resp.status == 401
        assert "error" in await resp.json()
    assert await handshake_status(session, sim, headers={"X-API-Key": "nope"}) == 401
    assert sim.handshakes_rejected == 3
    assert sim.total_connections == 0


async def test_key_without_scope_gets_403_empty(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """A key configured as lacking the scope: 403 with an empty body."""
    sim.add_key("scopeless", scopes_ok=False)
    async with session.get(sim.url + CONTROL_PATH, headers={"X-API-Key": "scopeless"}) as resp:
        assert resp.status == 403
        assert await resp.read() == b""
    assert await handshake_status(session, sim, headers={"X-API-Key": "scopeless"}) == 403


async def test_plain_get_gets_426(session: aiohttp.ClientSession, sim: PlaceOSSimulator) -> None:
    """A non-upgrade GET with a valid key: 426 Upgrade Required."""
    async with session.get(sim.url + CONTROL_PATH, headers={"X-API-Key": "test-key"}) as resp:
        assert resp.status == 426
    assert sim.handshakes_rejected == 0


async def test_reject_next_handshakes(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """The next n handshakes fail with the chosen status, then keys work again."""
    sim.reject_next_handshakes(2, status=403)
    key = {"X-API-Key": "test-key"}
    assert await handshake_status(session, sim, headers=key) == 403
    assert await handshake_status(session, sim, headers=key) == 403
    assert await handshake_status(session, sim, headers=key) == 101
    sim.reject_next_handshakes(1)
    async with session.get(
        sim.url + CONTROL_PATH, headers={**key, "Connection": "Upgrade", "Upgrade": "websocket"}
    ) as resp:
        assert resp.status == 401
        assert "error" in await resp.json()
    assert await handshake_status(session, sim, headers=key) == 101
    assert sim.handshakes_rejected == 3
    with pytest.raises(ValueError, match="401 or 403"):
        sim.reject_next_handshakes(1, status=500)


async def test_revoked_key_keeps_open_socket(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """Revocation is not re-checked on an open socket; the next handshake gets 401."""
    sim.add_key("temp")
    raw = await connect(session, sim, "temp")
    sim.revoke_key("temp")
    await raw.ws.send_str("ping")
    assert await raw.recv_text() == "pong"
    assert await handshake_status(session, sim, headers={"X-API-Key": "temp"}) == 401
    sim.revoke_key("never-existed")  # no error
    await raw.close()


async def test_enforce_domain(session: aiohttp.ClientSession, socket_enabled: None) -> None:
    """With enforce_domain, the Host header must be the authority's domain."""
    sim = PlaceOSSimulator(enforce_domain=True)
    sim.scenario.authority["domain"] = "https://placeos.example.com"
    await sim.start()
    try:
        key = {"X-API-Key": "test-key"}
        async with session.get(sim.url + CONTROL_PATH, headers=key) as resp:
            assert resp.status == 401
            assert await resp.json() == {"error": "authority not found"}
        async with session.get(sim.url + "/auth/authority") as resp:
            assert resp.status == 401
        good = {**key, "Host": f"placeos.example.com:{sim.port}"}
        ws = await session.ws_connect(sim.ws_url, headers=good)
        await ws.close()
        bare = {**key, "Host": "placeos.example.com"}
        async with session.get(sim.url + "/api/engine/v2/systems", headers=bare) as resp:
            assert resp.status == 200
    finally:
        await sim.stop()
