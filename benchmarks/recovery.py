"""Figure 5: recovery after an outage, 1 000 bindings.

The entry runs with its default timings (first reconnect attempt 1 s after a loss). The
simulator stops (sockets aborted, listener gone); once every entity is `unavailable`, every
status gets a new value while the server is down (the server does not replay such changes),
and the simulator starts again on the same port. Measured from the moment it listens again:
until every entity is available again holding its new value. Split into the wait for the
client's reconnect attempt (its backoff) and the resync itself (socket open → all fresh).
Baseline for the resync: a bare aiohttp client that connects, binds the 1 000 statuses
pipelined and receives every reply and initial value. Each round uses a freshly set up entry
(so every round's outage is the client's first, with the same backoff).
"""

from __future__ import annotations

import asyncio
import gc
import time

from homeassistant.const import EVENT_STATE_CHANGED, STATE_UNAVAILABLE
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback

from custom_components.placeos.client import ConnectionState

from .harness import (
    Figure,
    RawClient,
    ReadyCounter,
    median,
    ms,
    placeos_entry,
    setup_entry,
)
from .simproc import SimProcess, bench_keys

TARGET_SECONDS = 2.0


class _Watch:
    """Tracks how many entities are unavailable and how many hold a value >= `fresh_from`."""

    def __init__(self, hass: HomeAssistant, count: int) -> None:
        self.count = count
        self.fresh_from = 0
        self.unavailable: set[str] = set()
        self.fresh: set[str] = set()
        self.all_unavailable = asyncio.Event()
        self.all_fresh = asyncio.Event()
        self.fresh_at = 0.0
        self.remove = hass.bus.async_listen(EVENT_STATE_CHANGED, self._on_event)

    @callback
    def _on_event(self, event: Event[EventStateChangedData]) -> None:
        entity_id, new_state = event.data["entity_id"], event.data["new_state"]
        if new_state is None:
            return
        if new_state.state == STATE_UNAVAILABLE:
            self.unavailable.add(entity_id)
            self.fresh.discard(entity_id)
            if len(self.unavailable) >= self.count:
                self.all_unavailable.set()
            return
        self.unavailable.discard(entity_id)
        value = new_state.attributes.get("value")
        if self.fresh_from and isinstance(value, int) and value >= self.fresh_from:
            self.fresh.add(entity_id)
            if len(self.fresh) >= self.count and not self.all_fresh.is_set():
                self.fresh_at = time.perf_counter()
                self.all_fresh.set()


async def recovery_round(
    hass: HomeAssistant, sim: SimProcess, count: int, fresh_base: int
) -> dict[str, float]:
    """One outage and recovery; returns the phases in seconds."""
    await sim.call("populate", n=count, base=1)
    entry = placeos_entry(sim.url, count)
    ready = ReadyCounter(hass, count)
    await setup_entry(hass, entry)
    await ready.wait(60)
    ready.remove()
    watch = _Watch(hass, count)
    syncing_at: list[float] = []
    remove_listener = entry.runtime_data.client.add_state_listener(
        lambda state, _error: (
            syncing_at.append(time.perf_counter()) if state is ConnectionState.SYNCING else None
        )
    )
    try:
        gc.collect()
        stopped = time.perf_counter()
        await sim.call("stop")
        async with asyncio.timeout(30):
            await watch.all_unavailable.wait()
        await sim.call("populate", n=count, base=fresh_base)  # changes nobody is told about
        watch.fresh_from = fresh_base
        reachable = float((await sim.call("start", port=sim.port))["t"])
        async with asyncio.timeout(120):
            await watch.all_fresh.wait()
    finally:
        remove_listener()
        watch.remove()
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.config_entries.async_remove(entry.entry_id)
    if not syncing_at:
        raise RuntimeError("the client never reconnected")
    return {
        "total": watch.fresh_at - reachable,
        "wait": syncing_at[-1] - reachable,
        "resync": watch.fresh_at - syncing_at[-1],
        "outage": reachable - stopped,
    }


async def raw_resync(sim: SimProcess, count: int) -> float:
    """Seconds for a bare client to connect, bind `count` statuses and get every value."""
    gc.collect()
    start = time.perf_counter()
    async with RawClient.connect(sim.ws_url) as raw:
        await raw.bind_and_sync(bench_keys(count))
        return time.perf_counter() - start


async def run(
    hass: HomeAssistant, sim: SimProcess, *, count: int = 1000, rounds: int = 3
) -> Figure:
    """Alternate outages of the integration and the bare client's resync; medians."""
    phases: dict[str, list[float]] = {"total": [], "wait": [], "resync": [], "outage": []}
    raw: list[float] = []
    for number in range(rounds):
        result = await recovery_round(hass, sim, count, 1_000_000 * (number + 2))
        for name, value in result.items():
            phases[name].append(value)
        raw.append(await raw_resync(sim, count))
    total, wait, resync, outage = (
        median(phases[name]) for name in ("total", "wait", "resync", "outage")
    )
    raw_time = median(raw)
    line = (
        f"recovery  N={count} after_reachable={ms(total)} "
        f"(reconnect wait={ms(wait)} resync={ms(resync)}; outage={ms(outage)}) "
        f"| raw connect+bind+values={ms(raw_time)} resync/raw={resync / raw_time:.2f}"
    )
    figure = Figure("recovery", line)
    figure.row(
        f"Recovery of {count:,} bindings (server back → all available and fresh)",
        f"{ms(total)}: backoff wait {ms(wait)} + resync {ms(resync)}",
        f"bare client connect + bind + values {ms(raw_time)} "
        f"(**resync ratio {resync / raw_time:.2f}**)",
        "< 2 s",
        total < TARGET_SECONDS,
    )
    figure.data = {"total": total, "wait": wait, "resync": resync, "raw": raw_time}
    return figure
