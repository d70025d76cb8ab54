"""Figure 2: bind start-up, N bindings on one socket.

Measured: from `hass.config_entries.async_setup` of a fresh entry (fresh HA core, empty
registries) until every one of the N entities holds its initial value. Baseline: the same
integration and HA path, with a client that awaits each bind's reply before sending the next
(a subclass used only here). Pipelined and one-by-one runs alternate; medians are printed.

A second pair isolates the bind phase itself: a bare aiohttp client binding N statuses
pipelined against one by one (no HA), until every reply and initial notify arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
import contextlib
from dataclasses import replace
import gc
import time
from typing import Any
from unittest.mock import patch

import aiohttp
from homeassistant.core import HomeAssistant

from custom_components.placeos import hub as hub_module
from custom_components.placeos.client import BindingKey, PlaceOSWebSocket

from .harness import (
    Figure,
    RawClient,
    ReadyCounter,
    home_assistant,
    median,
    ms,
    placeos_entry,
    setup_plain_sensors,
    us,
)
from .simproc import SimProcess, bench_keys

TARGET_COUNT = 5000
TARGET_SECONDS = 3.0
TARGET_SPEEDUP = 10.0
# Per-binding cost may grow this much from the smallest to the largest N and still count as
# linear (noise; fixed costs make small N dearer per binding, not cheaper).
TARGET_GROWTH = 1.3


class OneByOneWebSocket(PlaceOSWebSocket):
    """The baseline client: each bind waits for its reply before the next is sent.

    It overrides the client's private `_request_many` (send all, then collect the replies),
    whatever its further arguments, with one call per key; the smoke test keeps it working.
    """

    async def _request_many(
        self, ws: aiohttp.ClientWebSocketResponse, cmd: str, keys: list[BindingKey], *args: Any
    ) -> list[BindingKey]:
        unanswered: list[BindingKey] = []
        for key in keys:
            unanswered += await super()._request_many(ws, cmd, [key], *args) or []
        return unanswered


@contextlib.contextmanager
def one_by_one_binds() -> Iterator[None]:
    """Make the integration create the one-by-one client."""
    with patch.object(hub_module, "PlaceOSWebSocket", OneByOneWebSocket):
        yield


async def ready_time(sim: SimProcess, count: int, *, one_by_one: bool = False) -> float:
    """Seconds from entry setup to every entity holding its initial value (fresh HA)."""
    async with home_assistant() as hass:
        entry = placeos_entry(sim.url, count)
        entry.add_to_hass(hass)
        ready = ReadyCounter(hass, count)
        context = one_by_one_binds() if one_by_one else contextlib.nullcontext()
        gc.collect()
        with context:
            start = time.perf_counter()
            if not await hass.config_entries.async_setup(entry.entry_id):
                raise RuntimeError(f"setup failed: {entry.state} {entry.reason}")
            async with asyncio.timeout(300):
                await ready.done.wait()
            elapsed = time.perf_counter() - start
        ready.remove()
        if len(_placeos_states(hass)) != count or len(ready.with_value) != count:
            raise RuntimeError("not every binding has its entity with a value")
        await hass.config_entries.async_unload(entry.entry_id)
    return elapsed


def _placeos_states(hass: HomeAssistant) -> list[Any]:
    return [
        state
        for state in hass.states.async_all("sensor")
        if state.attributes.get("sys", "").startswith("sys-bench")
    ]


async def _with_latency(sim: SimProcess, figure: Figure, count: int, latency: float) -> None:
    """One pipelined and one one-by-one start-up against a server `latency` s away."""
    # The one-by-one baseline needs count x latency to connect: longer than setup waits.
    timings = replace(hub_module.CLIENT_TIMINGS, setup_timeout=60 + 2 * count * latency)
    await sim.call("reply_delay", seconds=latency)
    try:
        with patch.object(hub_module, "CLIENT_TIMINGS", timings):
            ready = await ready_time(sim, count)
            one_by_one = await ready_time(sim, count, one_by_one=True)
    finally:
        await sim.call("reply_delay", seconds=0)
    speedup = one_by_one / ready
    figure.line += (
        f"\nbind_startup N={count} server_latency={ms(latency)} ready={ms(ready)} "
        f"one_by_one={ms(one_by_one)} speedup={speedup:.1f}x"
    )
    figure.row(
        f"Bind start-up, N = {count:,}, server replies {ms(latency)} later (not loopback)",
        f"{ms(ready)}",
        f"awaiting each bind: {ms(one_by_one)}: **{speedup:.1f}x faster**",
        "≥ 10x",
        speedup >= TARGET_SPEEDUP,
    )
    figure.data[f"ready_latency_{count}"] = ready
    figure.data[f"ready_1by1_latency_{count}"] = one_by_one


async def ha_alone_time(count: int) -> float:
    """Seconds for HA alone to add `count` plain sensors with values (its own share)."""
    async with home_assistant() as hass:
        gc.collect()
        start = time.perf_counter()
        await setup_plain_sensors(hass, count, 1)
        return time.perf_counter() - start


async def bind_phase(sim: SimProcess, count: int, *, one_by_one: bool) -> float:
    """Seconds for a bare client to bind `count` statuses and receive their initial values."""
    keys = bench_keys(count)
    async with RawClient.connect(sim.ws_url) as raw:
        gc.collect()
        start = time.perf_counter()
        notifies = await raw.bind(keys, one_by_one=one_by_one)
        await raw.receive_notifies(count - notifies)
        return time.perf_counter() - start


async def run(
    sim: SimProcess,
    *,
    sizes: tuple[int, ...] = (100, 1000, 5000),
    rounds: int = 3,
    server_latency: float = 0.0,
) -> Figure:
    """Measure every size, alternating pipelined and one-by-one; returns the figure.

    With `server_latency` (seconds), the largest size runs once more, pipelined and one by
    one, with every reply that much later: a server farther away than loopback.
    """
    await sim.call("populate", n=max(sizes), base=1)
    results: dict[int, dict[str, float]] = {}
    lines = []
    for count in sizes:
        times: dict[str, list[float]] = {
            "ready": [],
            "ready_1by1": [],
            "ha": [],
            "bind": [],
            "bind_1by1": [],
        }
        for _ in range(rounds):
            times["ready"].append(await ready_time(sim, count))
            times["ha"].append(await ha_alone_time(count))
            times["ready_1by1"].append(await ready_time(sim, count, one_by_one=True))
            times["bind"].append(await bind_phase(sim, count, one_by_one=False))
            times["bind_1by1"].append(await bind_phase(sim, count, one_by_one=True))
        result = {name: median(values) for name, values in times.items()}
        results[count] = result
        lines.append(
            f"bind_startup N={count} ready={ms(result['ready'])} "
            f"one_by_one={ms(result['ready_1by1'])} "
            f"speedup={result['ready_1by1'] / result['ready']:.1f}x "
            f"per_binding={us(result['ready'] / count)} "
            f"ha_alone={ms(result['ha'])} ({us(result['ha'] / count)}/entity) "
            f"| bind phase alone: pipelined={ms(result['bind'])} "
            f"one_by_one={ms(result['bind_1by1'])} "
            f"speedup={result['bind_1by1'] / result['bind']:.1f}x"
        )
    smallest, largest = min(sizes), max(sizes)
    growth = (results[largest]["ready"] / largest) / (results[smallest]["ready"] / smallest)
    lines.append(
        f"bind_startup per-binding cost N={largest} vs N={smallest}: {growth:.2f}x (1.0 = linear)"
    )
    figure = Figure("bind_startup", "\n".join(lines))
    for count in sizes:
        result = results[count]
        speedup = result["ready_1by1"] / result["ready"]
        bind_speedup = result["bind_1by1"] / result["bind"]
        figure.row(
            f"Bind start-up, N = {count:,} (entry setup → every entity has its value)",
            f"{ms(result['ready'])} ({us(result['ready'] / count)}/binding; HA alone "
            f"adding {count:,} plain sensors: {ms(result['ha'])})",
            f"awaiting each bind: {ms(result['ready_1by1'])}: **{speedup:.1f}x faster**; "
            f"bind phase alone {ms(result['bind'])} vs {ms(result['bind_1by1'])} "
            f"(**{bind_speedup:.1f}x**)",
            "< 3 s" if count == TARGET_COUNT else "",
            result["ready"] < TARGET_SECONDS if count == TARGET_COUNT else None,
        )
        if count == TARGET_COUNT:
            figure.row(
                f"Bind start-up speed-up against awaiting each bind, N = {count:,}, loopback",
                f"{speedup:.1f}x",
                f"HA alone adding the entities: {ms(result['ha'])} of {ms(result['ready'])}; "
                f"one bind round trip on loopback: "
                f"{us(result['bind_1by1'] / count)}",
                "≥ 10x",
                speedup >= TARGET_SPEEDUP,
            )
        figure.data[f"ready_{count}"] = result["ready"]
        figure.data[f"ready_1by1_{count}"] = result["ready_1by1"]
        figure.data[f"ha_{count}"] = result["ha"]
        figure.data[f"bind_{count}"] = result["bind"]
        figure.data[f"bind_1by1_{count}"] = result["bind_1by1"]
    figure.row(
        f"Bind start-up cost per binding, N = {largest:,} against N = {smallest:,}",
        f"{growth:.2f}x",
        f"{us(results[smallest]['ready'] / smallest)} → {us(results[largest]['ready'] / largest)}",
        "linear (≈ 1x or less)",
        growth <= TARGET_GROWTH,
    )
    figure.data["per_binding_growth"] = growth
    if server_latency > 0:
        await _with_latency(sim, figure, largest, server_latency)
    return figure
