"""Figure 4: memory per binding (client + hub + entity), `tracemalloc`.

In a fresh HA core (registries loaded, nothing else set up), `tracemalloc` starts; the entry with
N bindings is set up until every entity holds its value; the memory still allocated then,
divided by N, is the cost per binding. Baseline, the same way in another fresh core: N plain
sensors with the same attributes (Home Assistant's own cost per entity, registries included).
Allocations are also grouped by where they were made: the client, the hub, the entity and
sensor modules, and everything else (Home Assistant, aiohttp, the standard library) on their
behalf. The simulator runs in its own process, so none of its memory is counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import gc
from pathlib import Path
import tracemalloc

from homeassistant.core import HomeAssistant

from .harness import (
    Figure,
    ReadyCounter,
    home_assistant,
    placeos_entry,
    setup_entry,
    setup_plain_sensors,
)
from .simproc import SimProcess

TARGET_OVERHEAD = 10 * 1024
_PACKAGE = Path(__file__).resolve().parent.parent / "custom_components" / "placeos"
_GROUPS = (
    ("client", str(_PACKAGE / "client")),
    ("hub", str(_PACKAGE / "hub.py")),
    ("entity", str(_PACKAGE / "entity.py")),
    ("entity", str(_PACKAGE / "sensor.py")),
    ("integration, other", str(_PACKAGE)),
)


async def traced(setup: Callable[[HomeAssistant], Awaitable[None]]) -> tuple[int, dict[str, int]]:
    """Bytes still allocated after `setup` in a fresh core, and their split by origin."""
    async with home_assistant() as hass:
        gc.collect()
        tracemalloc.start(1)
        try:
            before = tracemalloc.get_traced_memory()[0]
            await setup(hass)
            gc.collect()
            total = tracemalloc.get_traced_memory()[0] - before
            snapshot = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        # Unloaded inside the traced core so that nothing leaks into the next measurement.
        for entry in hass.config_entries.async_entries():
            await hass.config_entries.async_unload(entry.entry_id)
    split: dict[str, int] = {}
    for stat in snapshot.statistics("filename"):
        filename = stat.traceback[0].filename
        group = next(
            (name for name, prefix in _GROUPS if filename.startswith(prefix)),
            "Home Assistant, aiohttp, stdlib",
        )
        split[group] = split.get(group, 0) + stat.size
    return total, split


async def run(sim: SimProcess, *, count: int = 5000) -> Figure:
    """Bytes per binding through the integration against plain sensors."""
    await sim.call("populate", n=count, base=1)

    async def integration(hass: HomeAssistant) -> None:
        ready = ReadyCounter(hass, count)
        await setup_entry(hass, placeos_entry(sim.url, count))
        await ready.wait(300)
        ready.remove()

    async def plain(hass: HomeAssistant) -> None:
        await setup_plain_sensors(hass, count, 1)

    total, split = await traced(integration)
    plain_total, _plain_split = await traced(plain)
    per_binding = total / count
    per_plain = plain_total / count
    overhead = per_binding - per_plain
    parts = " ".join(
        f"{name.replace(', ', '_').replace(' ', '_')}={size / count:,.0f}"
        for name, size in sorted(split.items(), key=lambda item: -item[1])
    )
    line = (
        f"memory  N={count} per_binding={per_binding:,.0f} B plain_sensor={per_plain:,.0f} B "
        f"overhead={overhead:,.0f} B ({overhead / 1024:.2f} KiB) "
        f"ratio={per_binding / per_plain:.2f} | by origin, B/binding: {parts}"
    )
    figure = Figure("memory", line)
    ours = sum(size for name, size in split.items() if not name.startswith("Home Assistant"))
    figure.row(
        f"Memory per binding, N = {count:,} (tracemalloc)",
        f"{per_binding / 1024:.2f} KiB/binding (allocated in the integration's own code: "
        f"{ours / count / 1024:.2f} KiB)",
        f"plain sensor {per_plain / 1024:.2f} KiB: **{overhead / 1024:.2f} KiB on top**",
        "< 10 KiB on top",
        overhead < TARGET_OVERHEAD,
    )
    figure.data = {"per_binding": per_binding, "per_plain": per_plain, "overhead": overhead}
    return figure
