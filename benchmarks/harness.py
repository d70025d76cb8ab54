"""What every benchmark shares: a real Home Assistant core, config entries, baselines, stats.

Home Assistant runs outside pytest, created by the test harness's own
`async_test_home_assistant` (registries in memory, nothing written to disk) in a temporary
config directory (so the harness's own `custom_components` folder cannot shadow the project's),
with custom integrations enabled as the `enable_custom_integrations` fixture does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
import contextlib
from dataclasses import dataclass, field
import json
import logging
import statistics
import tempfile
import time
from typing import Any
from unittest.mock import patch

import aiohttp
from aiohttp.resolver import AsyncResolver
from homeassistant import config_entries, loader
from homeassistant.components.sensor import SensorEntity
from homeassistant.config_entries import (
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigSubentryData,
)
from homeassistant.const import EVENT_STATE_CHANGED, STATE_UNAVAILABLE, STATE_UNKNOWN, Platform
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from pytest_homeassistant_custom_component.common import (  # type: ignore[import-untyped]
    MockConfigEntry,
    MockModule,
    MockPlatform,
    async_test_home_assistant,
    mock_integration,
    mock_platform,
    mock_storage,
)

from custom_components.placeos.const import (
    CONF_API_KEY,
    CONF_BINDINGS,
    CONF_SYS,
    CONF_SYSTEM_NAME,
    CONF_URL,
    CONF_VERIFY_SSL,
    DOMAIN,
    SUBENTRY_TYPE_SYSTEM,
)

from .simproc import API_KEY, Key, bench_keys

_LOGGER = logging.getLogger(__name__)

PLAIN_DOMAIN = "bench_plain"
NOT_A_VALUE = frozenset({STATE_UNKNOWN, STATE_UNAVAILABLE})


# ---------------------------------------------------------------------------- results


@dataclass
class Figure:
    """One printed line (or several) and its rows of the results table."""

    name: str
    line: str
    rows: list[tuple[str, str, str, str, bool | None]] = field(default_factory=list)
    """(figure, measured, baseline and ratio, target, met) rows of the markdown table."""
    data: dict[str, float] = field(default_factory=dict)
    """The raw figures (seconds, bytes, ratios) for tests and further use."""

    def row(self, title: str, measured: str, baseline: str, target: str, met: bool | None) -> None:
        """Add a row of the results table."""
        self.rows.append((title, measured, baseline, target, met))

    @property
    def met(self) -> bool:
        """Whether every target of this figure was met."""
        return all(row[4] is not False for row in self.rows)


class Span:
    """Wall-clock and CPU time of this thread between two marks.

    On a shared machine the wall clock also counts the time other processes had the CPU; the
    thread's CPU time does not, so its ratios are steadier. Both are reported.
    """

    __slots__ = ("cpu", "cpu_start", "wall", "wall_start")

    def __init__(self) -> None:
        self.wall_start = self.cpu_start = self.wall = self.cpu = 0.0

    def start(self) -> None:
        """Mark the beginning."""
        self.wall_start = time.perf_counter()
        self.cpu_start = time.thread_time()

    def stop(self) -> None:
        """Mark the end."""
        self.wall = time.perf_counter() - self.wall_start
        self.cpu = time.thread_time() - self.cpu_start

    def per(self, count: int) -> tuple[float, float]:
        """(wall, cpu) seconds per one of `count` items."""
        return self.wall / count, self.cpu / count


def median(values: Iterable[float]) -> float:
    """The median (the benchmarks alternate variants and take medians against noise)."""
    return statistics.median(list(values))


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def us(seconds: float) -> str:
    """Seconds as microseconds for printing."""
    return f"{seconds * 1e6:.1f} µs"


def ms(seconds: float) -> str:
    """Seconds as milliseconds for printing."""
    return f"{seconds * 1e3:.2f} ms"


# ---------------------------------------------------------------------------- Home Assistant


@contextlib.asynccontextmanager
async def home_assistant() -> AsyncIterator[HomeAssistant]:
    """A running Home Assistant core; entries are unloaded and the core stopped on exit."""
    # As the test harness does: no zeroconf DNS resolver (the simulator is on 127.0.0.1).
    resolver = AsyncResolver()
    resolver.real_close = resolver.close  # type: ignore[attr-defined]  # HA closes it so
    with (
        mock_storage(),  # registries are kept in memory, never written
        tempfile.TemporaryDirectory(prefix="placeos-bench-") as config_dir,
        patch("homeassistant.helpers.aiohttp_client._async_make_resolver", return_value=resolver),
    ):
        async with async_test_home_assistant(config_dir=config_dir) as hass:
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS, None)
            try:
                yield hass
            finally:
                loaded = [
                    entry
                    for entry in hass.config_entries.async_entries()
                    if entry.state is ConfigEntryState.LOADED
                ]
                for entry in loaded:
                    await hass.config_entries.async_unload(entry.entry_id)
                await hass.async_stop(force=True)


def placeos_entry(url: str, count: int, first: int = 0, **options: Any) -> MockConfigEntry:
    """A PlaceOS entry with bindings `first`… of `bench_keys`: one subentry per system."""
    by_system: dict[str, list[Key]] = {}
    for key in bench_keys(count, first):
        by_system.setdefault(key.sys, []).append(key)
    subentries = [
        ConfigSubentryData(
            data={
                CONF_SYS: sys,
                CONF_SYSTEM_NAME: f"Bench room {sys}",
                CONF_BINDINGS: [
                    {"mod": key.mod, "index": key.index, "name": key.name} for key in keys
                ],
            },
            subentry_type=SUBENTRY_TYPE_SYSTEM,
            title=f"Bench room {sys}",
            unique_id=sys,
        )
        for sys, keys in by_system.items()
    ]
    return MockConfigEntry(
        domain=DOMAIN,
        title="Benchmark building",
        unique_id="authority-bench",
        data={CONF_URL: url, CONF_API_KEY: API_KEY, CONF_VERIFY_SSL: True},
        options=options,
        subentries_data=subentries,
    )


async def setup_entry(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Add an entry and set it up; raises unless it loaded."""
    if hass.config_entries.async_get_entry(entry.entry_id) is None:
        entry.add_to_hass(hass)
    if not await hass.config_entries.async_setup(entry.entry_id):
        raise RuntimeError(f"setting up {entry.domain} failed: {entry.state} {entry.reason}")


def sensor_entity_ids(hass: HomeAssistant, domain: str) -> list[str]:
    """The sensor entity ids of an integration, in creation order."""
    from homeassistant.helpers import entity_registry as er

    registry = er.async_get(hass)
    return [
        entry.entity_id
        for entry in registry.entities.values()
        if entry.platform == domain and entry.domain == Platform.SENSOR
    ]


class StateCounter:
    """Counts `state_changed` events of a set of entities (every state write that changed).

    Home Assistant builds the event object only when someone listens; a real instance always
    has listeners (recorder, frontend), so the benchmarks listen in every variant alike.
    """

    def __init__(self, hass: HomeAssistant, entity_ids: Iterable[str] | None = None) -> None:
        self.hass = hass
        self.entity_ids = frozenset(entity_ids) if entity_ids is not None else None
        self.count = 0
        self.span = Span()  # from the first to the expected last write
        self.target = 0
        self.done = asyncio.Event()
        self.on_state: Callable[[str, Any], None] | None = None
        self._remove = hass.bus.async_listen(EVENT_STATE_CHANGED, self._on_event)

    def expect(self, count: int) -> None:
        """Reset and wait for `count` more writes (see `wait`)."""
        self.count = 0
        self.target = count
        self.span = Span()
        self.done.clear()

    @callback
    def _on_event(self, event: Event[EventStateChangedData]) -> None:
        data = event.data
        if self.entity_ids is not None and data["entity_id"] not in self.entity_ids:
            return
        if self.count == 0:
            self.span.start()
        self.count += 1
        if self.on_state is not None:
            self.on_state(data["entity_id"], data["new_state"])
        if self.target and self.count == self.target:
            self.span.stop()
            self.done.set()

    async def wait(self, timeout: float, idle: float = 1.0) -> None:  # noqa: ASYNC109
        """Until the expected number of writes happened, or none came for `idle` seconds.

        The caller compares `count` with what it expected: a lost value ends the wait after
        `idle` seconds instead of `timeout`, and shows as a count that falls short.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.done.is_set():
            seen = self.count
            try:
                async with asyncio.timeout(min(idle, max(0.0, deadline - loop.time()))):
                    await self.done.wait()
            except TimeoutError:
                if self.count == seen or loop.time() >= deadline:
                    return

    def close(self) -> None:
        """Stop listening."""
        self._remove()


class ReadyCounter:
    """Counts the entities that hold a value (not unknown, not unavailable)."""

    def __init__(self, hass: HomeAssistant, count: int) -> None:
        self.count = count
        self.with_value: set[str] = set()
        self.done = asyncio.Event()
        self.remove = hass.bus.async_listen(EVENT_STATE_CHANGED, self._on_event)

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109
        """Until every entity holds a value."""
        async with asyncio.timeout(timeout):
            await self.done.wait()

    @callback
    def _on_event(self, event: Event[EventStateChangedData]) -> None:
        new_state = event.data["new_state"]
        entity_id = event.data["entity_id"]
        if new_state is not None and new_state.state not in NOT_A_VALUE:
            self.with_value.add(entity_id)
            if len(self.with_value) >= self.count:
                self.done.set()
        else:
            self.with_value.discard(entity_id)


# ------------------------------------------------------------ Home Assistant's own cost


class _PlainFlow(ConfigFlow):
    """The config flow class a config entry needs; never started."""

    VERSION = 1


class PlainSensor(SensorEntity):
    """A plain sensor with the attributes a PlaceOS sensor has: HA's own per-entity cost."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    _unrecorded_attributes = frozenset({"value"})

    def __init__(self, key: Key, value: Any) -> None:
        """Initialise with the binding's identity and an initial value."""
        self._attr_unique_id = f"plain_{key.sys}_{key.mod}_{key.index}_{key.name}"
        self._attr_name = f"{key.mod} {key.index} {key.name}"
        self._attr_device_info = DeviceInfo(
            identifiers={(PLAIN_DOMAIN, key.sys)}, name=key.sys, manufacturer="Bench"
        )
        self._base = {"sys": key.sys, "mod": key.mod, "index": key.index, "name": key.name}
        self._attr_native_value = value
        self._attr_extra_state_attributes = {**self._base, "value": value}

    @callback
    def write(self, value: Any) -> None:
        """Take a new value and write the state (what any push integration must do)."""
        self._attr_native_value = value
        self._attr_extra_state_attributes = {**self._base, "value": value}
        self.async_write_ha_state()


async def setup_plain_sensors(
    hass: HomeAssistant, count: int, value: int, first: int = 0
) -> list[PlainSensor]:
    """Add `count` plain sensors through a config entry and the sensor platform."""
    sensors = [PlainSensor(key, value + n) for n, key in enumerate(bench_keys(count, first))]

    async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
        await hass.config_entries.async_forward_entry_setups(entry, [Platform.SENSOR])
        return True

    async def async_unload_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
        return await hass.config_entries.async_unload_platforms(entry, [Platform.SENSOR])

    async def async_setup_sensors(
        hass: HomeAssistant, entry: ConfigEntry, add: AddConfigEntryEntitiesCallback
    ) -> None:
        add(sensors)

    if PLAIN_DOMAIN not in hass.data.get(loader.DATA_INTEGRATIONS, {}):
        mock_integration(
            hass,
            MockModule(
                PLAIN_DOMAIN,
                async_setup_entry=async_setup_entry,
                async_unload_entry=async_unload_entry,
            ),
        )
        mock_platform(
            hass, f"{PLAIN_DOMAIN}.sensor", MockPlatform(async_setup_entry=async_setup_sensors)
        )
        mock_platform(hass, f"{PLAIN_DOMAIN}.config_flow", None)
        config_entries.HANDLERS.setdefault(PLAIN_DOMAIN, _PlainFlow)
    entry = MockConfigEntry(domain=PLAIN_DOMAIN, title="plain")
    await setup_entry(hass, entry)
    await hass.async_block_till_done()
    return sensors


# ---------------------------------------------------------------------------- bare client


class RawClient:
    """A bare aiohttp WebSocket client: the floor any PlaceOS client stands on."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, ws_url: str) -> AsyncIterator[RawClient]:
        """Open a socket with the benchmark key (no heartbeat, no message size limit)."""
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                ws_url, headers={"X-API-Key": API_KEY}, max_msg_size=0, autoping=False
            ) as ws,
        ):
            yield cls(session, ws)

    async def bind(self, keys: Sequence[Key], *, one_by_one: bool = False) -> int:
        """Bind `keys` (pipelined, or awaiting each reply first); returns initial notifies.

        Returns once every bind was answered and, for pipelined binds, once `initial`
        notifies arrived when the caller knows how many to expect (see `bind_and_sync`).
        """
        ws = self.ws
        notifies = 0
        if one_by_one:
            for number, key in enumerate(keys, 1):
                await ws.send_str(_bind_frame(number, key))
                while True:
                    frame = json.loads((await ws.receive()).data)
                    if frame["type"] == "notify":
                        notifies += 1
                    elif frame["id"] == number:
                        break
            return notifies
        for number, key in enumerate(keys, 1):
            await ws.send_str(_bind_frame(number, key))
        replies = 0
        while replies < len(keys):
            frame = json.loads((await ws.receive()).data)
            if frame["type"] == "notify":
                notifies += 1
            else:
                replies += 1
        return notifies

    async def bind_and_sync(self, keys: Sequence[Key]) -> None:
        """Bind pipelined and wait until every binding's initial notify arrived too."""
        notifies = await self.bind(keys)
        await self.receive_notifies(len(keys) - notifies)

    async def receive_notifies(self, count: int) -> Span:
        """Receive and `json.loads` frames until `count` notifies; first to last notify."""
        receive = self.ws.receive
        loads = json.loads
        span = Span()
        seen = 0
        while seen < count:
            frame = loads((await receive()).data)
            if frame["type"] == "notify":
                seen += 1
                if seen == 1:
                    span.start()
        span.stop()
        return span


def _bind_frame(request_id: int, key: Key) -> str:
    return json.dumps(
        {
            "id": request_id,
            "cmd": "bind",
            "sys": key.sys,
            "mod": key.mod,
            "index": key.index,
            "name": key.name,
        }
    )


@contextlib.contextmanager
def quiet_logging() -> Iterator[list[logging.LogRecord]]:
    """Warnings and errors only, while inside; yields the list of every error logged."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # "We found a custom integration … which has not been tested by Home Assistant".
    loader_logger = logging.getLogger("homeassistant.loader")
    loader_level = loader_logger.level
    loader_logger.setLevel(logging.ERROR)
    errors: list[logging.LogRecord] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record)

    collector = _Collect(level=logging.ERROR)
    logging.getLogger().addHandler(collector)
    try:
        yield errors
    finally:
        logging.getLogger().removeHandler(collector)
        loader_logger.setLevel(loader_level)
