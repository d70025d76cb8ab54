"""The simulator in a process of its own, driven over stdin/stdout with JSON lines.

The benchmarks measure the client side. With the simulator in the same event loop, its own cost
(encoding and writing 100 000 frames, answering 5 000 binds) would be added to every figure and
compress every ratio towards 1, so it runs in a child process on the second core:
``python -m benchmarks.simproc`` prints ``{"port": …}`` and then answers one JSON line per
command line (see `_Controller`). `SimProcess` is the parent's handle.

The benchmark bindings are `bench_keys(n)`: systems of 100 statuses each
(``sys-bench0000``: ``Sensor_1.value00`` … ``Sensor_1.value99``, ``sys-bench0001``: …).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
import sys
import time
from typing import Any, Final, NamedTuple, Self

API_KEY: Final = "bench-key.b3nchm4rk-s3cr3t"
BINDINGS_PER_SYSTEM: Final = 100
ROOT: Final = Path(__file__).resolve().parent.parent


class Key(NamedTuple):
    """A benchmark binding (the same tuple the server echoes in `meta`)."""

    sys: str
    mod: str
    index: int  # type: ignore[assignment]  # shadows tuple.index(); the protocol's name
    name: str


def system_id(number: int) -> str:
    """The id of benchmark system `number`."""
    return f"sys-bench{number:04d}"


def bench_keys(count: int, first: int = 0) -> list[Key]:
    """`count` benchmark bindings from number `first` on, 100 per system."""
    return [
        Key(system_id(i // BINDINGS_PER_SYSTEM), "Sensor", 1, f"value{i % BINDINGS_PER_SYSTEM:02d}")
        for i in range(first, first + count)
    ]


# ---------------------------------------------------------------------------- child side


class _Controller:
    """Executes the parent's commands on the simulator (the child's main loop)."""

    def __init__(self) -> None:
        from placeos_sim import PlaceOSSimulator, Scenario

        self.sim = PlaceOSSimulator(scenario=Scenario(), api_keys=(API_KEY,))
        self._prepared: list[tuple[Any, bytes]] = []

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        """Run one command; the reply always has `ok`."""
        sim = self.sim
        op = command["op"]
        if op == "populate":
            # Every binding gets a value, so each bind is followed by its initial notify.
            base = int(command["base"])
            for number, key in enumerate(bench_keys(int(command["n"]), command.get("first", 0))):
                sim.set_status(*key, base + number)
            return {"ok": True}
        if op == "burst":
            return {"ok": True, "frames": self._prepare_burst(command)}
        if op == "go":
            # The prepared bursts leave in one write per socket: from here on the kernel, not
            # this process, feeds the client, so the simulator cannot be the bottleneck.
            for transport, blob in self._prepared:
                transport.write(blob)
            self._prepared = []
            return {"ok": True}
        if op == "stream":
            keys = bench_keys(int(command["n"]), command.get("first", 0))
            sent = await self._stream(keys, float(command["rate"]), int(command["count"]))
            return {"ok": True, "sent": sent}
        if op == "reply_delay":
            # Every reply (and a bind's initial notify) leaves this much later: a server
            # farther away than loopback.
            sim.reply_delay = float(command["seconds"])
            return {"ok": True}
        if op == "stop":
            await sim.stop()
            return {"ok": True}
        if op == "start":
            await sim.start(port=int(command["port"]))
            return {"ok": True, "t": time.perf_counter()}
        if op == "stats":
            return {
                "ok": True,
                "connections": sim.connections,
                "total_connections": sim.total_connections,
                "bind_requests": sim.bind_requests,
                "bound": len(sim.bound_keys()),
            }
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _prepare_burst(self, command: dict[str, Any]) -> int:
        """Encode `per_key` notifies for each of `n` bindings, round robin, for `go`.

        Values base, base+1, … for every binding; the status ends at the last one. The
        frames are the simulator's own notify frames (same text, same framing as `burst()`),
        built ahead of time through its internals: its public `burst()` encodes and frames
        each notify while sending, about as costly per frame as the fastest client variants,
        which would then measure the simulator.
        """
        from placeos_sim.server import BindingKey as SimKey, _text_frame

        sim = self.sim
        base, per_key = int(command["base"]), int(command["per_key"])
        keys = [SimKey(*key) for key in bench_keys(int(command["n"]), command.get("first", 0))]
        blobs: dict[Any, list[bytes]] = {}
        heads: list[tuple[list[bytes], str, str]] = []
        for key in keys:
            # Where each status ends (stored without a notify of its own).
            sim._ensure_module(key.sys, key.mod, key.index).status[key.name] = base + per_key - 1
            for conn, bind_id in sim._subs.get(key, {}).items():
                heads.append((blobs.setdefault(conn, []), f'{{"id":{bind_id}', sim._meta(key)))
        for value in range(base, base + per_key):
            encoded = sim._encode(value)
            for out, head, meta in heads:
                out.append(_text_frame(f'{head},"type":"notify","value":{encoded},"meta":{meta}}}'))
        self._prepared = [(conn.transport, b"".join(parts)) for conn, parts in blobs.items()]
        return len(heads) * per_key

    async def _stream(self, keys: list[Key], rate: float, count: int) -> int:
        """Send `count` notifies at `rate` per second, round robin over the bindings.

        Each value is the sender's `time.perf_counter_ns()` when it was handed to the socket
        writer: CLOCK_MONOTONIC on Linux, the same clock in every process, so the receiver
        computes the latency directly.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while sent < count:
            due = min(count, int((loop.time() - start) * rate) + 1)
            while sent < due:
                key = keys[sent % len(keys)]
                self.sim.set_status(*key, time.perf_counter_ns())
                sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))
        return sent


async def _child_main() -> None:
    controller = _Controller()
    await controller.sim.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout

    def reply(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    reply({"port": controller.sim.port})
    try:
        while line := await reader.readline():
            command = json.loads(line)
            if command.get("op") == "quit":
                break
            try:
                reply(await controller.handle(command))
            except Exception as err:  # reported to the parent, which raises it
                reply({"ok": False, "error": repr(err)})
    finally:
        await controller.sim.stop()


# ---------------------------------------------------------------------------- parent side


class SimProcess:
    """Handle on a simulator child process: ``async with SimProcess() as sim: …``."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.port = 0

    @property
    def url(self) -> str:
        """The instance URL the integration is configured with."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """The control WebSocket URL, for the bare aiohttp baselines."""
        return f"ws://127.0.0.1:{self.port}/api/engine/v2/systems/control"

    async def __aenter__(self) -> Self:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.simproc",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        self.port = int((await self._read())["port"])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        assert proc.stdin is not None
        with contextlib.suppress(ConnectionError):
            proc.stdin.write(b'{"op": "quit"}\n')
            await proc.stdin.drain()
            proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _read(self) -> dict[str, Any]:
        assert self._proc is not None
        assert self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the simulator process ended")
        message: dict[str, Any] = json.loads(line)
        return message

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one command and return its reply; raises if the child reports an error."""
        assert self._proc is not None
        assert self._proc.stdin is not None
        async with self._lock:
            self._proc.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
            await self._proc.stdin.drain()
            reply = await self._read()
        if not reply.get("ok"):
            raise RuntimeError(f"simulator command {op} failed: {reply.get('error')}")
        return reply


if __name__ == "__main__":
    asyncio.run(_child_main())
