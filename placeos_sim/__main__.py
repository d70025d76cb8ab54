"""Run the PlaceOS simulator: ``python -m placeos_sim --port 8081 --api-key KEY``.

Prints the base URL and the API key, then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from .scenario import Scenario
from .server import PlaceOSSimulator


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m placeos_sim", description="PlaceOS server simulator"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8081, help="port (0 = any free port)")
    parser.add_argument(
        "--api-key", action="append", default=None, help="accepted API key (repeatable)"
    )
    parser.add_argument("--admin-key", action="append", default=[], help="admin API key")
    parser.add_argument("--scenario", help="scenario JSON file (default: the demo building)")
    parser.add_argument("--value-encoding", choices=("raw", "string"), default="raw")
    parser.add_argument(
        "--activity", type=float, metavar="SECONDS", help="change occupancy every SECONDS"
    )
    parser.add_argument("--notify-before-success", action="store_true")
    parser.add_argument("--unsolicited-pong", type=float, metavar="SECONDS")
    parser.add_argument("--enforce-domain", action="store_true")
    parser.add_argument("--tls", action="store_true", help="serve https with a self-signed cert")
    parser.add_argument(
        "--dump-scenario", action="store_true", help="print the scenario as JSON and exit"
    )
    return parser


async def serve(args: argparse.Namespace) -> None:
    """Start, print the URL and key, wait for a signal, stop."""
    scenario = Scenario.from_file(args.scenario) if args.scenario else Scenario.demo()
    ssl_context = None
    if args.tls:
        from .tls import self_signed_ssl_context  # noqa: PLC0415 - cryptography only if needed

        ssl_context = self_signed_ssl_context(args.host)
    api_keys = args.api_key or ["test-key"]
    sim = PlaceOSSimulator(
        scenario,
        api_keys,
        admin_keys=args.admin_key,
        value_encoding=args.value_encoding,
        notify_before_success=args.notify_before_success,
        unsolicited_pong_interval=args.unsolicited_pong,
        ssl_context=ssl_context,
        enforce_domain=args.enforce_domain,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    url = await sim.start(args.host, args.port)
    if args.activity:
        sim.start_activity(args.activity)
    print(f"PlaceOS simulator listening on {url}", flush=True)
    print(f"API key: {api_keys[0]}", flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()
        print("PlaceOS simulator stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    if args.dump_scenario:
        scenario = Scenario.from_file(args.scenario) if args.scenario else Scenario.demo()
        json.dump(scenario.to_dict(), sys.stdout, indent=2)
        print()
        return 0
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
