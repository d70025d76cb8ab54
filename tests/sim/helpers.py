"""A tiny raw WebSocket client for the simulator tests (deliberately not the project client)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from placeos_sim import PlaceOSSimulator

SYS = "sys-room101"


class RawSocket:
    """Send requests as JSON, read frames as dicts (or ``str`` for non-JSON text)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, **request: Any) -> None:
        """Send a request frame."""
        await self.ws.send_str(json.dumps(request))

    async def request(
        self,
        cmd: str,
        ident: int,
        name: str,
        *,
        sys: str = SYS,
        mod: str = "Display",
        index: int = 1,
        **extra: Any,
    ) -> None:
        """Send a well-formed request."""
        await self.send(id=ident, cmd=cmd, sys=sys, mod=mod, index=index, name=name, **extra)

    async def recv_raw(self, wait: float = 1.0) -> aiohttp.WSMessage:
        """The next message of any type."""
        return await self.ws.receive(timeout=wait)

    async def recv_text(self, wait: float = 1.0) -> str:
        """The next text frame."""
        msg = await self.ws.receive(timeout=wait)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        return str(msg.data)

    async def recv(self, wait: float = 1.0) -> dict[str, Any]:
        """The next frame, parsed as a JSON object."""
        frame = json.loads(await self.recv_text(wait))
        assert isinstance(frame, dict)
        return frame

    async def recv_many(self, count: int, wait: float = 1.0) -> list[dict[str, Any]]:
        """The next ``count`` frames."""
        return [await self.recv(wait) for _ in range(count)]

    async def expect_silence(self, duration: float = 0.05) -> None:
        """Assert that nothing arrives within ``duration`` seconds."""
        try:
            msg = await self.ws.receive(timeout=duration)
        except TimeoutError:
            return
        raise AssertionError(f"expected silence, got {msg!r}")

    async def close(self) -> None:
        """Close the socket."""
        await self.ws.close()


async def connect(
    session: aiohttp.ClientSession,
    sim: PlaceOSSimulator,
    key: str | None = "test-key",
    **kwargs: Any,
) -> RawSocket:
    """Open the control socket with ``key`` in the X-API-Key header."""
    headers = dict(kwargs.pop("headers", {}))
    if key is not None:
        headers["X-API-Key"] = key
    ws = await session.ws_connect(sim.ws_url, headers=headers, autoping=False, **kwargs)
    return RawSocket(ws)


def meta(name: str, *, sys: str = SYS, mod: str = "Display", index: int = 1) -> dict[str, Any]:
    """The ``meta`` object the server echoes."""
    return {"sys": sys, "mod": mod, "index": index, "name": name}


async def handshake_status(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator, **kwargs: Any
) -> int:
    """Try a WebSocket handshake and return the HTTP status it failed with (or 101)."""
    try:
        ws = await session.ws_connect(sim.ws_url, **kwargs)
    except aiohttp.WSServerHandshakeError as err:
        return err.status
    await ws.close()
    return 101


async def settle() -> None:
    """Let the loop run a few iterations."""
    for _ in range(5):
        await asyncio.sleep(0)
