"""The fault campaign: a real Home Assistant, the integration and the simulator over loopback.

While status values keep changing on the simulator (the "churn"), the campaign injects faults
one after the other, at random moments and in a random order drawn from one seed. After each
fault it waits until the server is reachable again and then demands, within `recovery_bound`
seconds, that every entity of the entry is available and shows the simulator's current value
(state and `value` attribute), including the "final" values set during the fault.

The seed fixes the fault order and the fuzz frames exactly; moments and values are drawn
from it too, but interleave with real socket timing, so two runs with one seed inject the same
faults in the same order, not at the same bytes.

The client runs on the loop's real clock with tiny timings (`CAMPAIGN_TIMINGS`); HA's own
timers are not involved (no grace period), so no simulated clock is needed.

Measured (see `Summary`): faults recovered within the bound; entities left available but
different from the simulator after the bound (stale); final values not shown (lost); unhandled
exceptions (loop exception handler, incl. "Task exception was never retrieved", and ERROR
records with a traceback); ERROR records per outage; tasks left after unload; memory growth
(tracemalloc) between the end of the warm-up and the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
import gc
import itertools
import logging
import random
import time
import tracemalloc
from types import MappingProxyType
from typing import Any, Final

from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState, ConfigSubentry
from homeassistant.const import STATE_UNAVAILABLE, STATE_UNKNOWN, Platform
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.placeos.client import BindingKey, ConnectionState, decode_auto
from custom_components.placeos.const import (
    CONF_API_KEY,
    CONF_BINDINGS,
    CONF_SYS,
    CONF_SYSTEM_NAME,
    DOMAIN,
    SERVICE_EXEC,
    SUBENTRY_TYPE_SYSTEM,
)
from custom_components.placeos.hub import ClientTimings, PlaceOSHub
from custom_components.placeos.sensor import state_from_value
from placeos_sim import DriverError, MethodSpec, PlaceOSSimulator, UnexpectedFailure

from .fuzz import FRAME_KINDS, Frame, generate

# The simulator shares the event loop with HA: while one of them decodes a megabyte the other
# cannot answer, so the liveness window keeps some slack for a loaded 2-core machine.
CAMPAIGN_TIMINGS: Final = ClientTimings(
    setup_timeout=5.0,
    request_timeout=0.3,
    ping_interval=0.2,
    dead_after=1.2,
    backoff_min=0.01,
    backoff_max=0.05,
    close_timeout=2.0,
)
AUTHORITY_ID: Final = "authority-demo0001"
FIRST_KEY: Final = "key-id-4242.s3cr3t-Xq9Lr2Vw8Zt5"
ADMIN_KEY: Final = "key-id-9999.adm1n-Pk3Jh7Ys1Wd6"
EXEC_TIMEOUT: Final = 0.3

FAULT_KINDS: Final = (
    "tcp_drop",
    "server_restart",
    "half_open",
    "reply_delayed",
    "reply_never",
    "out_of_order",
    "notify_before_success",
    "key_revoked",
    "frame_malformed",
    "frame_unknown",
    "frame_oversized",
    "frame_invalid_utf8",
    "exec_error",
    "exec_while_reconnecting",
    "subentries_while_down",
)

MAIN_SYSTEM: Final = "sys-room101"
# Bindings of the system that stays configured, and of the systems that come and go.
SYSTEMS: Final[dict[str, tuple[str, ...]]] = {
    MAIN_SYSTEM: (
        "Display_1.power",
        "Display_1.volume",
        "Display_1.input",
        "Campaign_1.text",
        "Campaign_1.big",
        "Campaign_1.late",
    ),
    "sys-room102": ("Display_1.input", "Display_1.power"),
    "sys-lobby1": ("Lighting_1.level", "Lighting_1.scene"),
    "sys-campaign": ("Campaign_1.a", "Campaign_1.b"),
}
INITIAL_SYSTEMS: Final = (MAIN_SYSTEM, "sys-room102")
# A value of this many items is a real notify of just over 1 MiB for a bound status.
BIG_ITEMS: Final = 18_000
# ERROR records from the simulator's side are the server's business, not the integration's.
_SERVER_LOGGERS: Final = ("placeos_sim", "aiohttp.server", "aiohttp.web", "aiohttp.access")
# exec error categories and the translation key the action must raise for each.
EXEC_ERROR_KEYS: Final = {
    0: "command_failed",
    1: "function_not_found",
    2: "access_denied",
    3: "request_failed",
    4: "command_failed",
    5: "module_not_found",
    6: "module_not_found",
    7: "unexpected_failure",
}


def key_of(sys: str, label: str) -> BindingKey:
    """`("sys-1", "Display_2.power")` -> BindingKey."""
    return BindingKey.parse(sys, label)


def expected_state(raw: Any) -> tuple[str, Any]:
    """The state string and `value` attribute an entity must show for a simulator value."""
    value = decode_auto(raw)
    state = state_from_value(value)
    return (STATE_UNKNOWN if state is None else str(state)), value


def subentry_for(sys: str) -> ConfigSubentry:
    """A "system" subentry binding SYSTEMS[sys]."""
    bindings = []
    for label in SYSTEMS[sys]:
        key = key_of(sys, label)
        bindings.append({"mod": key.mod, "index": key.index, "name": key.name})
    return ConfigSubentry(
        data=MappingProxyType(
            {CONF_SYS: sys, CONF_SYSTEM_NAME: f"System {sys}", CONF_BINDINGS: bindings}
        ),
        subentry_type=SUBENTRY_TYPE_SYSTEM,
        title=f"System {sys}",
        unique_id=sys,
    )


class RecordCollector(logging.Handler):
    """Keeps WARNING+ records (few) and scans every record for secrets without keeping it."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.secrets = secrets
        self.records: list[logging.LogRecord] = []
        self.seen = 0
        self.leaks: list[str] = []
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.seen += 1
        text = record.getMessage()
        if record.exc_info:
            text += self._formatter.formatException(record.exc_info)
        if record.exc_text:
            text += record.exc_text
        if any(secret in text for secret in self.secrets):
            self.leaks.append(f"{record.name}: {text[:300]}")
        if record.levelno >= logging.WARNING:
            self.records.append(record)


@dataclass
class FaultResult:
    """What one fault did and how the integration came out of it."""

    number: int
    kind: str
    recovered: bool = False
    recovery_seconds: float = 0.0
    stale: int = 0
    lost_final: int = 0
    error_lines: int = 0
    warning_lines: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Summary:
    """The campaign's figures; `line()` is the one-line summary."""

    faults: int = 0
    recovered: int = 0
    stale_after_recovery: int = 0
    lost_final_values: int = 0
    unhandled_exceptions: int = 0
    max_error_lines_per_outage: int = 0
    leaked_tasks: int = 0
    memory_growth_kib: int = 0
    secret_leaks: int = 0
    seconds: float = 0.0
    results: list[FaultResult] = field(default_factory=list)
    unhandled: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    memory_top: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The summary line of the issue."""
        return (
            f"faults={self.faults} recovered={self.recovered} "
            f"stale_after_recovery={self.stale_after_recovery} "
            f"lost_final_values={self.lost_final_values} "
            f"unhandled_exceptions={self.unhandled_exceptions} "
            f"max_error_lines_per_outage={self.max_error_lines_per_outage} "
            f"leaked_tasks={self.leaked_tasks} memory_growth_kib={self.memory_growth_kib}"
        )

    def per_kind(self) -> list[str]:
        """One line per fault kind: count, recovered, slowest recovery."""
        lines = []
        for kind in FAULT_KINDS:
            results = [r for r in self.results if r.kind == kind]
            if not results:
                continue
            slowest = max(r.recovery_seconds for r in results)
            lines.append(
                f"  {kind:<24} faults={len(results):<4} "
                f"recovered={sum(r.recovered for r in results):<4} "
                f"max_recovery_s={slowest:.3f}"
            )
        return lines

    def report(self, seed: int) -> str:
        """Per-kind lines, failures, extra figures, and the summary line last."""
        recoveries = sorted(r.recovery_seconds for r in self.results) or [0.0]
        lines = [f"fault campaign: seed={seed} runtime_s={self.seconds:.1f}", *self.per_kind()]
        lines.append(
            f"  recovery_s median={recoveries[len(recoveries) // 2]:.3f} "
            f"p95={recoveries[int(len(recoveries) * 0.95)]:.3f} max={recoveries[-1]:.3f}; "
            f"max_warning_lines_per_outage="
            f"{max((r.warning_lines for r in self.results), default=0)}; "
            f"secret_leaks={self.secret_leaks}"
        )
        for result in self.results:
            if not result.recovered or result.problems:
                lines.append(f"  fault #{result.number} {result.kind}: {result.problems[:5]}")
        lines.extend(f"  unhandled: {text}" for text in self.unhandled[:10])
        lines.extend(f"  leaked task: {text}" for text in self.leaked[:10])
        lines.extend(f"  memory: {text}" for text in self.memory_top)
        lines.append(self.line())
        return "\n".join(lines)


class Campaign:
    """Runs `faults` faults against one config entry; see the module docstring."""

    def __init__(
        self,
        hass: HomeAssistant,
        sim: PlaceOSSimulator,
        *,
        faults: int,
        seed: int,
        recovery_bound: float = 5.0,
        warmup: int | None = None,
        kinds: tuple[str, ...] = FAULT_KINDS,
        trace_top: int = 0,
        before_unload: Callable[[], Awaitable[None]] | None = None,
        keep_exec_errors: bool = False,
        keep_pytest_logs: bool = False,
    ) -> None:
        self.hass = hass
        self.sim = sim
        self.faults = faults
        self.seed = seed
        self.recovery_bound = recovery_bound
        self.trace_top = trace_top
        self.before_unload = before_unload
        # Every error placeos.exec raised to its caller, for the security checks (kept only
        # on request: their tracebacks hold frames alive, which the memory figure would count).
        self.keep_exec_errors = keep_exec_errors
        # pytest keeps every log record of a test for its report: over hundreds of faults that
        # is megabytes, which the memory figure would count. Off unless asked for (caplog).
        self.keep_pytest_logs = keep_pytest_logs
        self.exec_errors: list[HomeAssistantError] = []
        self._snapshot: tracemalloc.Snapshot | None = None
        self.warmup = warmup if warmup is not None else min(max(3, faults // 10), faults)
        self.rng = random.Random(seed)
        self.churn_rng = random.Random(seed + 1)
        self.order = self._fault_order(kinds)
        frame_counts = {kind: self.order.count(f"frame_{kind}") for kind in FRAME_KINDS}
        self.frames: dict[str, Iterator[Frame]] = {
            kind: iter(frames) for kind, frames in generate(seed, frame_counts).items()
        }
        self.api_key = FIRST_KEY
        self.secrets: list[str] = [FIRST_KEY, ADMIN_KEY]
        self.collector = RecordCollector(self.secrets)
        self.entry: MockConfigEntry | None = None
        self.summary = Summary()
        self._values = itertools.count(1)
        self._frozen: set[BindingKey] = set()
        self._finals: dict[BindingKey, Any] = {}
        self._churn_paused = False
        self._churn_bound_paused = False
        self._churn_task: asyncio.Task[None] | None = None
        self._exec_codes = itertools.cycle(sorted(EXEC_ERROR_KEYS))
        self._removed_entities: set[str] = set()
        self._held = asyncio.Event()
        self._unhandled: list[str] = []

    # ------------------------------------------------------------------ plan

    def _fault_order(self, kinds: tuple[str, ...]) -> list[str]:
        """Every kind equally often (as far as `faults` allows), shuffled by the seed."""
        order = [kinds[i % len(kinds)] for i in range(self.faults)]
        self.rng.shuffle(order)
        return order

    # ------------------------------------------------------------------ run

    async def run(self) -> Summary:
        """Set up, run every fault, unload, and return the figures."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        root = logging.getLogger()
        detached = (
            []
            if self.keep_pytest_logs
            else [h for h in root.handlers if type(h).__name__ == "LogCaptureHandler"]
        )
        for handler in detached:
            root.removeHandler(handler)
        root.addHandler(self.collector)
        # The integration's own DEBUG lines are scanned for secrets too (the root stays at
        # the harness's level: HA's DEBUG output would dominate the run time).
        ours = logging.getLogger("custom_components.placeos")
        ours_level = ours.level
        ours.setLevel(logging.DEBUG)
        previous_handler = loop.get_exception_handler()

        def on_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            self._unhandled.append(str(context.get("exception") or context.get("message")))
            if previous_handler is not None:
                previous_handler(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(on_loop_exception)
        tasks_before = set(asyncio.all_tasks())
        memory_start: int | None = None
        try:
            self._prepare_simulator()
            await self._set_up()
            self._churn_task = loop.create_task(self._churn(), name="campaign-churn")
            for number, kind in enumerate(self.order, start=1):
                if number == self.warmup + 1:
                    memory_start = self._start_memory_trace()
                await self._run_fault(number, kind)
            memory_end = await self._cool_down_and_measure()
            await self._stop_churn()
            if self.before_unload is not None:
                await self.before_unload()
            await self._unload()
            await self.sim.stop()
            for _ in range(5):
                await asyncio.sleep(0)
            current = asyncio.current_task()
            leaked = [
                t for t in asyncio.all_tasks() - tasks_before if t is not current and not t.done()
            ]
        finally:
            await self._stop_churn()
            tracemalloc.stop()
            loop.set_exception_handler(previous_handler)
            root.removeHandler(self.collector)
            for handler in detached:
                root.addHandler(handler)
            ours.setLevel(ours_level)

        summary = self.summary
        summary.faults = len(summary.results)
        summary.recovered = sum(r.recovered for r in summary.results)
        summary.stale_after_recovery = sum(r.stale for r in summary.results)
        summary.lost_final_values = sum(r.lost_final for r in summary.results)
        summary.max_error_lines_per_outage = max(
            (r.error_lines for r in summary.results), default=0
        )
        traced = [r for r in self.collector.records if r.levelno >= logging.ERROR and r.exc_info]
        summary.unhandled = self._unhandled + [f"{r.name}: {r.getMessage()[:200]}" for r in traced]
        summary.unhandled_exceptions = len(summary.unhandled)
        summary.leaked = [repr(t) for t in leaked]
        summary.leaked_tasks = len(leaked)
        if memory_start is not None:
            summary.memory_growth_kib = max(0, memory_end - memory_start) // 1024
        summary.secret_leaks = len(self.collector.leaks)
        summary.seconds = time.monotonic() - started
        return summary

    def _prepare_simulator(self) -> None:
        sim = self.sim
        sim.add_key(ADMIN_KEY, admin=True)
        for sys, labels in SYSTEMS.items():
            for label in labels:
                key = key_of(sys, label)
                if label != "Campaign_1.late":  # a status that appears only later
                    sim.set_status(*key, self._next_value())
        sim.set_method(MAIN_SYSTEM, "Campaign", 1, "echo", lambda *args: list(args))
        sim.set_method(MAIN_SYSTEM, "Campaign", 1, "hold", self._hold)
        sim.set_method(MAIN_SYSTEM, "Campaign", 1, "slow", MethodSpec(delay=1.0, returns=1))
        sim.set_method(MAIN_SYSTEM, "Campaign", 1, "secret", MethodSpec(returns=1, privileged=True))
        sim.set_method(
            MAIN_SYSTEM, "Campaign", 1, "broken", _raiser(DriverError("device offline", 503))
        )
        sim.set_method(
            MAIN_SYSTEM, "Campaign", 1, "stopped", _raiser(UnexpectedFailure("module stopped"))
        )

    async def _set_up(self) -> None:
        subentries = []
        for sys in INITIAL_SYSTEMS:
            subentry = subentry_for(sys)
            subentries.append(
                {
                    "data": dict(subentry.data),
                    "subentry_type": subentry.subentry_type,
                    "title": subentry.title,
                    "unique_id": subentry.unique_id,
                }
            )
        entry = MockConfigEntry(
            domain=DOMAIN,
            title="Demo Building",
            unique_id=AUTHORITY_ID,
            data={"url": self.sim.url, CONF_API_KEY: self.api_key, "verify_ssl": True},
            subentries_data=subentries,  # type: ignore[arg-type]
        )
        self.entry = entry
        entry.add_to_hass(self.hass)
        if not await self.hass.config_entries.async_setup(entry.entry_id):
            raise AssertionError(f"setup failed: {entry.state} {entry.reason}")
        await self.hass.async_block_till_done()
        if self._problems():
            ok, _seconds, problems = await self._converge()
            if not ok:
                raise AssertionError(f"initial values never arrived: {problems}")

    async def _unload(self) -> None:
        entry = self._entry()
        if entry.state is ConfigEntryState.LOADED:
            assert await self.hass.config_entries.async_unload(entry.entry_id)
        await self.hass.async_block_till_done()
        await self.sim.wait_for(lambda: self.sim.connections == 0)

    def _start_memory_trace(self) -> int:
        gc.collect()
        tracemalloc.start(1)
        if self.trace_top:
            self._snapshot = tracemalloc.take_snapshot()
        return tracemalloc.get_traced_memory()[0]

    async def _cool_down_and_measure(self) -> int:
        """Small values everywhere and settled, so only retained memory is measured."""
        self._churn_paused = True
        for sys, labels in SYSTEMS.items():
            for label in labels:
                self.sim.set_status(*key_of(sys, label), self._next_value(small=True))
        await self._converge()
        gc.collect()
        if not tracemalloc.is_tracing():
            return 0
        if self._snapshot is not None:
            growth = tracemalloc.take_snapshot().compare_to(self._snapshot, "lineno")
            self.summary.memory_top = [
                f"{stat.size_diff // 1024} KiB in {stat.count_diff} blocks: "
                + " <- ".join(
                    f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno}"
                    for frame in stat.traceback[:6]
                )
                for stat in growth[: self.trace_top]
            ]
        return tracemalloc.get_traced_memory()[0]

    # ------------------------------------------------------------------ one fault

    async def _run_fault(self, number: int, kind: str) -> None:
        result = FaultResult(number, kind)
        records_before = len(self.collector.records)
        self._churn_paused = False
        # A random moment: the churn keeps changing values meanwhile.
        await asyncio.sleep(self.rng.uniform(0.0, 0.04))
        try:
            await getattr(self, f"_fault_{kind}")(result)
        except (AssertionError, TimeoutError) as err:
            result.problems.append(f"fault did not play out: {err!r}")
        # The server is reachable again; values keep changing for a moment, then hold still
        # so "equal to the simulator" is well defined.
        await asyncio.sleep(self.rng.uniform(0.0, 0.03))
        self._churn_paused = True
        ok, seconds, problems = await self._converge()
        result.recovered = ok and not result.problems
        result.recovery_seconds = seconds
        if not ok:
            result.problems.extend(problems)
            result.stale = sum(1 for p in problems if p.startswith("stale"))
            result.lost_final = sum(
                1
                for key, value in self._finals.items()
                if (entity := self._entity_id(key)) is not None
                and self._shown(entity) != expected_state(value)
            )
        new_records = self.collector.records[records_before:]
        result.error_lines = sum(
            1
            for r in new_records
            if r.levelno >= logging.ERROR and not r.name.startswith(_SERVER_LOGGERS)
        )
        result.warning_lines = sum(
            1
            for r in new_records
            if r.levelno == logging.WARNING and not r.name.startswith(_SERVER_LOGGERS)
        )
        if result.error_lines:
            result.problems.extend(
                f"ERROR {r.name}: {r.getMessage()[:200]}"
                for r in new_records
                if r.levelno >= logging.ERROR
            )
        self._finals.clear()
        self._frozen.clear()
        self.summary.results.append(result)
        if not ok:
            # Start the next fault from a clean slate, or one miss would count many times.
            self.sim.drop_connections()
            await self._converge()

    # -- connection faults

    async def _fault_tcp_drop(self, result: FaultResult) -> None:
        self.sim.drop_connections()
        self._set_finals()

    async def _fault_server_restart(self, result: FaultResult) -> None:
        port = self.sim.port
        await self.sim.stop()
        await asyncio.sleep(self.rng.uniform(0.02, 0.3))
        self._set_finals()
        await self.sim.start(port=port or 0)

    async def _fault_half_open(self, result: FaultResult) -> None:
        """The socket stops carrying anything; only the client's keep-alive can notice.

        The simulator answers again the moment the client gives the old socket up: a half-open
        connection is a dead TCP path, not a server that turns away new connections.
        """
        sim = self.sim
        declared_dead = asyncio.get_running_loop().create_future()

        def on_state(state: ConnectionState, _reason: BaseException | None) -> None:
            if state is ConnectionState.DISCONNECTED and not declared_dead.done():
                sim.silent = False
                sim.answer_ping = True
                declared_dead.set_result(None)

        remove = self._hub().client.add_state_listener(on_state)
        try:
            sim.silent = True
            sim.answer_ping = False
            await asyncio.sleep(self.rng.uniform(0.0, 0.2))
            self._set_finals()  # these notifies go nowhere: only the resync can bring them
            async with asyncio.timeout(CAMPAIGN_TIMINGS.dead_after * 5):
                await declared_dead
        finally:
            remove()
            sim.silent = False
            sim.answer_ping = True

    async def _fault_reply_delayed(self, result: FaultResult) -> None:
        """Replies (and the initial notifies that travel with them) come after the timeout.

        The simulator builds a bind's initial notify when the bind arrives and sends it with
        the delayed reply, so changes made meanwhile overtake it: the client must notice the
        late reply and bind again (see tests/client/test_regressions.py).
        """
        delay = CAMPAIGN_TIMINGS.request_timeout * self.rng.uniform(1.5, 3.0)
        self.sim.reply_delay = delay
        try:
            await self._drop_and_resync()
            outcome = await self._exec_outcome("Campaign", "echo", [1])
            if outcome != "exec_timeout":
                result.problems.append(f"exec with a late reply gave {outcome}")
        finally:
            self.sim.reply_delay = 0.0

    async def _fault_reply_never(self, result: FaultResult) -> None:
        """Replies that never come: dropped by the server, or lost with the initial notifies
        while the server is silent for the first moments of a new socket."""
        sim = self.sim
        if self.rng.random() < 0.5:
            sim.drop_replies = True
            try:
                await self._drop_and_resync()
                outcome = await self._exec_outcome("Campaign", "echo", [2])
                if outcome != "exec_timeout":
                    result.problems.append(f"exec without a reply gave {outcome}")
            finally:
                sim.drop_replies = False
            return
        binds = sim.bind_requests + len(self._bound_keys())
        sim.silent = True
        try:
            sim.drop_connections()
            self._set_finals()
            await sim.wait_for(lambda: sim.bind_requests >= binds, timeout=self.recovery_bound)
        finally:
            sim.silent = False

    async def _fault_out_of_order(self, result: FaultResult) -> None:
        """Replies within a short window come back reversed.

        The churn leaves bound statuses alone until the window has passed: the simulator holds
        a bind's initial notify (built when the bind arrived) with its reply, so a change made
        meanwhile would overtake it. The real server reads the value when it sends; with no
        sequence numbers in the protocol no client could tell the two notifies apart.
        """
        self.sim.out_of_order = True
        self._churn_bound_paused = True
        try:
            await self._drop_and_resync()
        finally:
            self.sim.out_of_order = False
        await asyncio.sleep(self.sim.out_of_order_window * 2)
        self._churn_bound_paused = False

    async def _fault_notify_before_success(self, result: FaultResult) -> None:
        self.sim.notify_before_success = True
        try:
            await self._drop_and_resync()
        finally:
            self.sim.notify_before_success = False

    async def _fault_key_revoked(self, result: FaultResult) -> None:
        """401 on the next handshake; a new key is entered through the reauth flow."""
        hass = self.hass
        old_hub = self._hub()
        self.sim.revoke_key(self.api_key)
        self.sim.drop_connections()
        async with asyncio.timeout(self.recovery_bound):
            while not (flows := self._reauth_flows()):  # noqa: ASYNC110 - HA starts it
                await asyncio.sleep(0.005)
        self._set_finals()
        new_key = f"key-id-{5000 + result.number}.r0tated-{self.rng.getrandbits(40):010x}"
        self.secrets.append(new_key)
        self.sim.add_key(new_key)
        flow_id = flows[0]["flow_id"]
        form = await hass.config_entries.flow.async_configure(flow_id)
        if form.get("step_id") != "reauth_confirm":
            raise AssertionError(f"unexpected reauth step {form}")
        done = await hass.config_entries.flow.async_configure(flow_id, {CONF_API_KEY: new_key})
        if done["type"] is not FlowResultType.ABORT or done["reason"] != "reauth_successful":
            raise AssertionError(f"reauth did not succeed: {done}")
        self.api_key = new_key
        await hass.async_block_till_done()
        entry = self._entry()
        async with asyncio.timeout(self.recovery_bound):
            while entry.state is not ConfigEntryState.LOADED or entry.runtime_data is old_hub:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    # -- frames

    async def _inject(self, kind: str) -> Frame:
        frame = next(self.frames[kind])
        await self.sim.inject_frame(frame.data, text=frame.text)
        return frame

    async def _fault_frame_malformed(self, result: FaultResult) -> None:
        await self._inject("malformed")
        self._set_finals()

    async def _fault_frame_unknown(self, result: FaultResult) -> None:
        await self._inject("unknown")
        self._set_finals()

    async def _fault_frame_oversized(self, result: FaultResult) -> None:
        """A hostile frame of >= 1 MiB, and a real notify of >= 1 MiB for a bound status."""
        await self._inject("oversized")
        big = [{"n": i, "text": "é" * 20} for i in range(BIG_ITEMS)]
        self._freeze(key_of(MAIN_SYSTEM, "Campaign_1.big"), big)
        self._set_finals()

    async def _fault_frame_invalid_utf8(self, result: FaultResult) -> None:
        hub = self._hub()
        connects = hub.client.diagnostics()["connects"]
        await self._inject("invalid_utf8")
        self._set_finals()
        # RFC 6455: the client must fail the connection (1007) and then resync.
        async with asyncio.timeout(self.recovery_bound):
            while hub.client.diagnostics()["connects"] == connects:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    # -- exec

    async def _fault_exec_error(self, result: FaultResult) -> None:
        """One error category per fault, in turn: each maps to its translated HA error."""
        code = next(self._exec_codes)
        await self._wait_connected()
        self._set_finals()
        if code in (1, 2, 3, 6, 7):
            target = {
                1: ("Campaign", 1, "no_such_method"),
                2: ("Campaign", 1, "secret"),
                3: ("Campaign", 1, "broken"),
                6: ("Nowhere", 3, "anything"),
                7: ("Campaign", 1, "stopped"),
            }[code]
            outcome = await self._exec_outcome(target[0], target[2], [], index=target[1])
        else:
            # The current server never sends 0, 4 or 5; older ones might. Answer the real
            # request with such an error instead of the simulator's reply.
            sim = self.sim
            self._held = asyncio.Event()
            exec_before = sim.exec_requests
            call = asyncio.ensure_future(self._exec_outcome("Campaign", "hold", [code], timeout=2))
            await sim.wait_for(lambda: sim.exec_requests > exec_before)
            request_id = next(r.id for r in reversed(sim.requests) if r.name == "hold")
            sim.inject_frame(
                f'{{"id":{request_id},"type":"error","error_code":{code},'
                f'"msg":"legacy error {code}","code":500}}'
            )
            outcome = await call
            self._held.set()  # the simulator's own reply now comes too late to matter
        if outcome != EXEC_ERROR_KEYS[code]:
            result.problems.append(f"exec error {code} gave {outcome}")

    async def _fault_exec_while_reconnecting(self, result: FaultResult) -> None:
        """exec calls around a drop: each ends in time with a value or a translated error."""
        loop = asyncio.get_running_loop()
        calls = [
            asyncio.ensure_future(self._exec_outcome("Campaign", "slow", [])),
            asyncio.ensure_future(self._exec_outcome("Campaign", "echo", [3])),
        ]
        await asyncio.sleep(self.rng.uniform(0.0, 0.02))
        self.sim.drop_connections()
        self._set_finals()
        started = loop.time()
        while loop.time() - started < CAMPAIGN_TIMINGS.backoff_max * 2:
            calls.append(asyncio.ensure_future(self._exec_outcome("Campaign", "echo", [4])))
            await asyncio.sleep(0.01)
        outcomes = await asyncio.gather(*calls)
        allowed = {"ok", "exec_timeout", "not_connected", "communication_error"}
        if unexpected := [o for o in outcomes if o not in allowed]:
            result.problems.append(f"exec around a reconnect gave {unexpected}")

    # -- subentries

    async def _fault_subentries_while_down(self, result: FaultResult) -> None:
        """While the server is down, one optional system leaves and another one comes."""
        hass = self.hass
        entry = self._entry()
        port = self.sim.port
        await self.sim.stop()
        await self._wait_down()
        present = {sub.data[CONF_SYS]: sid for sid, sub in entry.subentries.items()}
        optional = [sys for sys in SYSTEMS if sys != MAIN_SYSTEM]
        leaving = [sys for sys in optional if sys in present]
        coming = [sys for sys in optional if sys not in present]
        if leaving:
            sys = self.rng.choice(leaving)
            self._removed_entities.update(
                entity for label in SYSTEMS[sys] if (entity := self._entity_id(key_of(sys, label)))
            )
            assert hass.config_entries.async_remove_subentry(entry, present[sys])
        if coming:
            sys = self.rng.choice(coming)
            assert hass.config_entries.async_add_subentry(entry, subentry_for(sys))
        await hass.async_block_till_done()
        self._set_finals()
        await asyncio.sleep(self.rng.uniform(0.0, 0.1))
        await self.sim.start(port=port or 0)

    async def _hold(self, *args: Any) -> list[Any]:
        """An exec that answers only when told to (its request gets a forged reply first)."""
        await self._held.wait()
        return list(args)

    # ------------------------------------------------------------------ values

    def _next_value(self, *, small: bool = False) -> Any:
        n = next(self._values)
        if small:
            return n
        pick = self.churn_rng.random()
        if pick < 0.04:
            return None  # the status is deleted
        if pick < 0.35:
            return n
        if pick < 0.6:
            return f"v{n}"
        if pick < 0.7:
            return [n, f"x{n}", {"ok": True}]
        if pick < 0.8:
            return {"n": n, "nested": {"list": [n, None]}}
        if pick < 0.86:
            return f"[{n}, {n + 1}]"  # stringified JSON: decoded in `auto` mode
        if pick < 0.9:
            return "L" * 300 + str(n)  # longer than a state may be
        return n % 2 == 0

    def _bound_keys(self) -> list[BindingKey]:
        entry = self._entry()
        keys = []
        for subentry in entry.subentries.values():
            sys = subentry.data[CONF_SYS]
            keys.extend(key_of(sys, label) for label in SYSTEMS[sys])
        return keys

    def _freeze(self, key: BindingKey, value: Any) -> None:
        """Set a value the churn will not touch until this fault is checked."""
        self._frozen.add(key)
        self._finals[key] = value
        self.sim.set_status(*key, value)

    def _set_finals(self) -> None:
        """The last values set during the fault: they must be shown after recovery."""
        candidates = [k for k in self._bound_keys() if k not in self._frozen]
        for key in self.rng.sample(candidates, k=min(len(candidates), self.rng.randint(1, 3))):
            self._freeze(key, self._next_value())

    async def _churn(self) -> None:
        all_keys = [key_of(sys, label) for sys, labels in SYSTEMS.items() for label in labels]
        rng = self.churn_rng
        while True:
            await asyncio.sleep(rng.uniform(0.002, 0.02))
            if self._churn_paused:
                continue
            key = rng.choice(all_keys)
            if key in self._frozen or (self._churn_bound_paused and key in self._bound_keys()):
                continue
            self.sim.set_status(*key, self._next_value())

    async def _stop_churn(self) -> None:
        task, self._churn_task = self._churn_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # ------------------------------------------------------------------ checks

    def _entry(self) -> MockConfigEntry:
        assert self.entry is not None
        return self.entry

    def _hub(self) -> PlaceOSHub:
        hub: PlaceOSHub = self._entry().runtime_data
        return hub

    def _reauth_flows(self) -> list[Any]:
        return [
            flow
            for flow in self.hass.config_entries.flow.async_progress_by_handler(DOMAIN)
            if flow["context"].get("source") == SOURCE_REAUTH
        ]

    def _entity_id(self, key: BindingKey) -> str | None:
        unique_id = f"{AUTHORITY_ID}_{key.sys}_{key.mod}_{key.index}_{key.name}"
        return er.async_get(self.hass).async_get_entity_id(Platform.SENSOR, DOMAIN, unique_id)

    def _shown(self, entity: str) -> tuple[str, Any] | None:
        state = self.hass.states.get(entity)
        if state is None:
            return None
        return state.state, state.attributes.get("value")

    def _problems(self, *, exact: bool = True) -> list[str]:
        """Everything that differs from "available and equal to the simulator".

        Not `exact`: values are compared by state and shape only, so polling stays cheap
        while a megabyte-sized value is around; the final verdict is always exact.
        """
        problems = []
        wanted = set()
        for key in self._bound_keys():
            entity = self._entity_id(key)
            if entity is None:
                problems.append(f"missing entity for {key}")
                continue
            wanted.add(entity)
            shown = self._shown(entity)
            if shown is None or shown[0] == STATE_UNAVAILABLE:
                problems.append(f"unavailable {entity}")
                continue
            expected = expected_state(self.sim.get_status(*key))
            if shown != expected if exact else not _alike(shown, expected):
                problems.append(
                    f"stale {entity}: shows {_short(shown[0])}, simulator has {_short(expected[0])}"
                )
        for entity in self._removed_entities - wanted:
            if self.hass.states.get(entity) is not None:
                problems.append(f"removed entity still present: {entity}")
        return problems

    async def _converge(self) -> tuple[bool, float, list[str]]:
        """Wait until nothing differs; (ok, seconds taken, problems left at the bound)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            problems = self._problems(exact=False) or self._problems()
            elapsed = loop.time() - started
            if not problems:
                return True, elapsed, []
            if elapsed >= self.recovery_bound:
                return False, elapsed, self._problems()
            await asyncio.sleep(0.01)

    async def _wait_down(self) -> None:
        """Until the client has noticed that its socket is gone."""
        client = self._hub().client
        async with asyncio.timeout(self.recovery_bound):
            while client.connected:  # noqa: ASYNC110 - the client's own state
                await asyncio.sleep(0.002)

    async def _wait_connected(self) -> None:
        client = self._hub().client
        async with asyncio.timeout(self.recovery_bound):
            while client.state is not ConnectionState.CONNECTED:  # noqa: ASYNC110
                await asyncio.sleep(0.002)

    async def _drop_and_resync(self) -> None:
        """Cut the socket and wait until a new one is CONNECTED (binds answered or timed out)."""
        client = self._hub().client
        connects = client.diagnostics()["connects"]
        self.sim.drop_connections()
        self._set_finals()
        async with asyncio.timeout(self.recovery_bound):
            while not (  # noqa: ASYNC110 - the client's own state
                client.diagnostics()["connects"] > connects
                and client.state is ConnectionState.CONNECTED
            ):
                await asyncio.sleep(0.002)

    async def _exec_outcome(
        self,
        mod: str,
        name: str,
        args: list[Any],
        *,
        index: int = 1,
        timeout: float = EXEC_TIMEOUT,  # noqa: ASYNC109 - the action's own field
    ) -> str:
        """Call placeos.exec; "ok" or the translation key of the HA error it raised."""
        try:
            await self.hass.services.async_call(
                DOMAIN,
                SERVICE_EXEC,
                {
                    "sys": MAIN_SYSTEM,
                    "mod": mod,
                    "index": index,
                    "name": name,
                    "args": args,
                    "timeout": timeout,
                },
                blocking=True,
                return_response=True,
            )
        except HomeAssistantError as err:
            if self.keep_exec_errors:
                self.exec_errors.append(err)
            text = str(err)
            if any(secret in text for secret in self.secrets):
                self.collector.leaks.append(f"exec error: {text}")
            return err.translation_key or f"untranslated: {err!r}"
        return "ok"


def _raiser(error: Exception) -> Callable[..., Any]:
    def handler(*_args: Any) -> Any:
        raise error

    return handler


def _alike(shown: tuple[str, Any], expected: tuple[str, Any]) -> bool:
    """Same state, and a value of the same type and size (cheap for big values)."""
    if shown[0] != expected[0]:
        return False
    value, wanted = shown[1], expected[1]
    if type(value) is not type(wanted):
        return False
    if isinstance(value, list | dict):
        return len(value) == len(wanted)
    return bool(value == wanted)


def _short(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:37]}..."
