"""Fixtures for the client tests: the simulator on 127.0.0.1 and a client factory.

Intervals are tiny so reconnects and dead-socket detection happen within fractions of a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from custom_components.placeos.client import (
    BindingKey,
    ConnectionState,
    PlaceOSWebSocket,
)
from placeos_sim import PlaceOSSimulator

API_KEY = "test-key"
FAST: dict[str, float] = {
    "request_timeout": 0.5,
    "exec_timeout": 0.5,
    "ping_interval": 0.05,
    "dead_after": 0.3,
    "backoff_min": 0.01,
    "backoff_max": 0.05,
}
POWER = BindingKey("sys-room101", "Display", 1, "power")
VOLUME = BindingKey("sys-room101", "Display", 1, "volume")
INPUT = BindingKey("sys-room101", "Display", 1, "input")
BOOKINGS = BindingKey("sys-room101", "Bookings", 1, "bookings")
FIRMWARE = BindingKey("sys-room101", "_Admin", 1, "firmware")


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:  # noqa: ASYNC109
    """Wait until `predicate()` holds, checking every few milliseconds."""
    async with asyncio.timeout(timeout):
        # Polling: the predicates mix client, callback and simulator state, no one event.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


@dataclass
class Harness:
    """A client, its run() task and what its callbacks saw."""

    client: PlaceOSWebSocket
    task: asyncio.Task[None] | None = None
    states: list[tuple[ConnectionState, BaseException | None]] = field(default_factory=list)
    values: dict[BindingKey, list[Any]] = field(default_factory=dict)

    def record(self, key: BindingKey, value: Any) -> None:
        """A NotifyCallback that stores every value."""
        self.values.setdefault(key, []).append(value)

    def bind(self, *keys: BindingKey) -> None:
        """Register `keys` with the recording callback."""
        self.client.add_bindings(dict.fromkeys(keys, self.record))

    def last(self, key: BindingKey) -> Any:
        """The latest value seen for `key` (KeyError if none)."""
        return self.values[key][-1]

    def has(self, key: BindingKey, value: Any) -> bool:
        """True once `value` was the latest for `key`."""
        seen = self.values.get(key)
        return bool(seen) and seen[-1] == value

    def state_names(self) -> list[ConnectionState]:
        """The transitions seen, without reasons."""
        return [state for state, _ in self.states]

    def start(self) -> asyncio.Task[None]:
        """Start run() as a task."""
        self.task = asyncio.get_running_loop().create_task(self.client.run())
        return self.task

    async def connected(self, timeout: float = 3.0) -> None:  # noqa: ASYNC109
        """Start if needed and wait for CONNECTED."""
        if self.task is None:
            self.start()
        await self.client.wait_connected(timeout)

    async def reconnected(self, count: int, timeout: float = 3.0) -> None:  # noqa: ASYNC109
        """Wait until the client connected `count` times in all and is CONNECTED."""
        await until(
            lambda: (
                self.client.diagnostics()["connects"] >= count
                and self.client.state is ConnectionState.CONNECTED
            ),
            timeout,
        )


Factory = Callable[..., Harness]


@pytest.fixture
async def session(socket_enabled: None) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session, as Home Assistant would pass its shared one."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def sim(socket_enabled: None) -> AsyncIterator[PlaceOSSimulator]:
    """The demo building on a free port of 127.0.0.1."""
    simulator = PlaceOSSimulator()
    await simulator.start()
    yield simulator
    await simulator.stop()


async def _shutdown(harnesses: list[Harness]) -> None:
    for harness in harnesses:
        await harness.client.close()
        if harness.task is not None:
            # asyncio.wait: a task the test cancelled on purpose must not fail the teardown.
            _done, pending = await asyncio.wait([harness.task], timeout=2)
            assert not pending, "run() did not return after close()"


@pytest.fixture
async def make_client(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> AsyncIterator[Factory]:
    """Build clients against the simulator (or `url=`); all are closed after the test."""
    harnesses: list[Harness] = []

    def factory(url: str | None = None, api_key: str = API_KEY, **options: Any) -> Harness:
        client = PlaceOSWebSocket(session, url or sim.url, api_key, **{**FAST, **options})
        harness = Harness(client)
        client.add_state_listener(lambda state, reason: harness.states.append((state, reason)))
        harnesses.append(harness)
        return harness

    yield factory
    await _shutdown(harnesses)
