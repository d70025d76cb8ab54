"""Figure 3: latency from the simulator's send to HA's `state_changed`, at a steady rate.

The simulator (its own process) sends notifies at `rate` per second, round robin over 100
bindings; each value is the sender's `time.perf_counter_ns()` (CLOCK_MONOTONIC, shared by all
processes on Linux). A `state_changed` listener subtracts it from its own clock: the latency
covers the simulator's writer, loopback TCP, the client, the hub, the entity and the state
machine. Baseline: a bare aiohttp client receiving and `json.loads`-ing the same stream.
The two alternate; the samples of every round are pooled for the percentiles.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from typing import Any

from homeassistant.core import HomeAssistant, State

from .harness import (
    Figure,
    RawClient,
    StateCounter,
    ms,
    percentile,
    placeos_entry,
    sensor_entity_ids,
    setup_entry,
)
from .simproc import SimProcess, bench_keys

FIRST_FULL = 0
FIRST_RAW = 1000
TARGET_P99 = 0.005


async def full_samples(
    sim: SimProcess,
    counter: StateCounter,
    bindings: int,
    rate: float,
    count: int,
) -> list[int]:
    """Latencies (ns) of `count` notifies through the integration into HA's state machine."""
    samples: list[int] = []
    clock = time.perf_counter_ns

    def on_state(_entity_id: str, new_state: State | None) -> None:
        now = clock()
        if new_state is not None:
            samples.append(now - new_state.attributes["value"])

    counter.on_state = on_state
    counter.expect(count)
    try:
        await sim.call("stream", n=bindings, first=FIRST_FULL, rate=rate, count=count)
        await counter.wait(30)
    finally:
        counter.on_state = None
    return samples


async def raw_samples(sim: SimProcess, bindings: int, rate: float, count: int) -> list[int]:
    """Latencies (ns) of `count` notifies to a bare aiohttp client that `json.loads` them."""
    samples: list[int] = []
    clock = time.perf_counter_ns
    loads = json.loads
    async with RawClient.connect(sim.ws_url) as raw:
        await raw.bind_and_sync(bench_keys(bindings, FIRST_RAW))

        async def receive() -> None:
            receive_msg = raw.ws.receive
            while len(samples) < count:
                frame: dict[str, Any] = loads((await receive_msg()).data)
                now = clock()
                if frame["type"] == "notify":
                    samples.append(now - frame["value"])

        receiver = asyncio.create_task(receive())
        await sim.call("stream", n=bindings, first=FIRST_RAW, rate=rate, count=count)
        async with asyncio.timeout(30):
            await receiver
    return samples


async def run(
    hass: HomeAssistant,
    sim: SimProcess,
    *,
    bindings: int = 100,
    rate: float = 1000.0,
    seconds: float = 5.0,
    rounds: int = 2,
) -> Figure:
    """Alternate the integration and the bare client `rounds` times; pooled percentiles."""
    for first in (FIRST_FULL, FIRST_RAW):
        await sim.call("populate", n=bindings, first=first, base=1)
    entry = placeos_entry(sim.url, bindings, FIRST_FULL)
    await setup_entry(hass, entry)
    await hass.async_block_till_done()
    entity_ids = sensor_entity_ids(hass, "placeos")
    counter = StateCounter(hass, entity_ids)
    count = max(1, round(rate * seconds))
    full: list[int] = []
    raw: list[int] = []
    try:
        for _ in range(rounds):
            # A full collection left due by earlier work would stall whichever variant it
            # lands in for a few hundred ms (see benchmarks/README.md): start each clean.
            gc.collect()
            raw += await raw_samples(sim, bindings, rate, count)
            gc.collect()
            full += await full_samples(sim, counter, bindings, rate, count)
    finally:
        counter.close()
        await hass.config_entries.async_unload(entry.entry_id)
    if len(full) != count * rounds:
        raise RuntimeError(f"{len(full)} state writes for {count * rounds} notifies")
    full_s = sorted(sample / 1e9 for sample in full)
    raw_s = sorted(sample / 1e9 for sample in raw)
    p50, p99, worst = percentile(full_s, 0.5), percentile(full_s, 0.99), full_s[-1]
    r50, r99 = percentile(raw_s, 0.5), percentile(raw_s, 0.99)
    line = (
        f"latency  rate={rate:g}/s samples={len(full_s)} full p50={ms(p50)} p99={ms(p99)} "
        f"max={ms(worst)} | raw p50={ms(r50)} p99={ms(r99)} "
        f"| p50/raw={p50 / r50:.2f} p99/raw={p99 / r99:.2f}"
    )
    figure = Figure("latency", line)
    figure.row(
        f"Latency, simulator send → HA `state_changed`, {rate:g} notifies/s",
        f"p50 {ms(p50)}, p99 {ms(p99)} (max {ms(worst)}, {len(full_s):,} samples)",
        f"raw aiohttp + json.loads: p50 {ms(r50)}, p99 {ms(r99)} (**p99 ratio {p99 / r99:.2f}**)",
        "p99 < 5 ms",
        p99 < TARGET_P99,
    )
    figure.data = {"p50": p50, "p99": p99, "max": worst, "raw_p50": r50, "raw_p99": r99}
    return figure
