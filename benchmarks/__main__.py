"""Run the benchmarks: ``python -m benchmarks [--quick] [--only NAME,…]`` (or ``scripts/bench``).

Prints one line per figure as it is measured, then a markdown table (machine included) that is
also written to ``benchmarks/RESULTS.md`` (full runs only, unless ``--results`` is given).
Every figure is a ratio against a baseline measured in the same run, alternated with it.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
import datetime
import logging
import os
from pathlib import Path
import platform
import sys
import time

import aiohttp
from homeassistant.const import __version__ as ha_version

from . import latency, memory, recovery, startup, throughput
from .harness import Figure, home_assistant, quiet_logging
from .simproc import SimProcess

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
NAMES = ("throughput", "startup", "latency", "memory", "recovery")


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark runs."""

    bindings: int = 100
    per_key: int = 1000
    throughput_rounds: int = 7
    startup_sizes: tuple[int, ...] = (100, 1000, 5000)
    startup_rounds: int = 3
    server_latency: float = 0.005
    latency_rate: float = 1000.0
    latency_seconds: float = 5.0
    latency_rounds: int = 2
    memory_count: int = 5000
    recovery_count: int = 1000
    recovery_rounds: int = 3


FULL = Sizes()
QUICK = Sizes(
    per_key=20,
    throughput_rounds=1,
    startup_sizes=(20, 100),
    startup_rounds=1,
    server_latency=0.0,
    latency_seconds=0.3,
    latency_rounds=1,
    memory_count=200,
    recovery_count=100,
    recovery_rounds=1,
)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for row in cpuinfo:
                if row.startswith("model name"):
                    cpu = row.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "home_assistant": ha_version,
        "aiohttp": aiohttp.__version__,
        "os": f"{platform.system()} {platform.release()}",
    }


def load_average() -> str:
    """The 1-minute load average (other work on the machine makes figures noisy)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def table(
    figures: list[Figure], info: dict[str, str], started: str, loads: str, quick: bool
) -> str:
    """The markdown that goes into RESULTS.md and the README's Performance section."""
    lines = [
        f"Measured {started} with `scripts/bench{' --quick' if quick else ''}` on "
        f"{info['cpus']} x {info['cpu']}, {info['os']}, Python {info['python']}, "
        f"Home Assistant {info['home_assistant']}, aiohttp {info['aiohttp']} "
        f"(load average {loads}). Simulator in its own process on loopback; Home Assistant "
        "core created as its test harness does (in-memory registries, no recorder).",
        "",
        "| Figure | Measured | Baseline in the same run → ratio | Target | Met |",
        "|---|---|---|---|---|",
    ]
    for figure in figures:
        for *cells, met in figure.rows:
            verdict = "" if met is None else ("yes" if met else "**no**")
            lines.append(f"| {' | '.join(cells)} | {verdict} |")
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> int:
    """Run the selected benchmarks; 0 when all ran (targets are reported, not enforced)."""
    with quiet_logging() as errors:
        return await _run(args, errors)


async def _run(args: argparse.Namespace, errors: list[logging.LogRecord]) -> int:
    sizes = QUICK if args.quick else FULL
    only = set(args.only.split(",")) if args.only else set(NAMES)
    unknown = only - set(NAMES)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {NAMES}")
        return 2
    info = machine()
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = load_average()
    print(
        f"machine  cpus={info['cpus']} cpu={info['cpu']!r} python={info['python']} "
        f"ha={info['home_assistant']} aiohttp={info['aiohttp']} load={load_before}",
        flush=True,
    )
    figures: list[Figure] = []

    async def measure(name: str, run: Callable[[], Awaitable[Figure]]) -> None:
        if name not in only:
            return
        began = time.perf_counter()
        figure = await run()
        figures.append(figure)
        print(f"{figure.line}  [{time.perf_counter() - began:.1f} s]", flush=True)

    async with SimProcess() as sim:
        async with home_assistant() as hass:
            await measure(
                "throughput",
                lambda: throughput.run(
                    hass,
                    sim,
                    bindings=sizes.bindings,
                    per_key=sizes.per_key,
                    rounds=sizes.throughput_rounds,
                ),
            )
        await measure(
            "startup",
            lambda: startup.run(
                sim,
                sizes=sizes.startup_sizes,
                rounds=sizes.startup_rounds,
                server_latency=sizes.server_latency,
            ),
        )
        async with home_assistant() as hass:
            await measure(
                "latency",
                lambda: latency.run(
                    hass,
                    sim,
                    bindings=sizes.bindings,
                    rate=sizes.latency_rate,
                    seconds=sizes.latency_seconds,
                    rounds=sizes.latency_rounds,
                ),
            )
        await measure("memory", lambda: memory.run(sim, count=sizes.memory_count))
        async with home_assistant() as hass:
            await measure(
                "recovery",
                lambda: recovery.run(
                    hass, sim, count=sizes.recovery_count, rounds=sizes.recovery_rounds
                ),
            )

    loads = f"{load_before} before, {load_average()} after"
    markdown = table(figures, info, started, loads, args.quick)
    print()
    print(markdown, end="")
    target = Path(args.results) if args.results else (None if args.quick else RESULTS)
    if target is not None and only == set(NAMES):
        target.write_text(f"# Benchmark results\n\n{markdown}", encoding="utf-8")
        print(f"\n(table written to {target})")
    if errors:
        print(f"\n{len(errors)} error(s) were logged during the run:")
        for record in errors:
            print(f"  {record.name}: {record.getMessage()}")
        return 1
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(NAMES)}")
    parser.add_argument("--results", help="write the markdown table to this file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
