"""The PlaceOS simulator: aiohttp app, control WebSocket, fault switches and control API.

See the package docstring (``placeos_sim/__init__.py``) for the control API and
``docs``-level protocol notes for what the real server does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
import functools
import heapq
import inspect
import itertools
import json
import logging
import random
import socket
import ssl
import struct
from typing import Any, Final, NamedTuple, cast

from aiohttp import WSMsgType, web
from aiohttp.base_protocol import BaseProtocol

from .rest import API_PREFIX, add_rest_routes
from .scenario import (
    UNSET,
    DriverError,
    MethodHandler,
    MethodSpec,
    Module,
    Scenario,
    System,
    UnexpectedFailure,
)

_LOGGER = logging.getLogger(__name__)

CONTROL_PATH: Final = f"{API_PREFIX}/systems/control"

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_COMMANDS: Final = frozenset({"bind", "unbind", "exec", "debug", "ignore"})
_REQUEST_KEYS: Final = frozenset({"id", "cmd", "sys", "mod", "index", "name", "args"})
_REQUIRED_KEYS: Final = frozenset({"id", "cmd", "sys", "mod", "name"})
DEBUG_LEVELS: Final = ("trace", "debug", "info", "notice", "warn", "error", "fatal")

# Error categories (error_code) of the protocol.
ERR_PARSE: Final = 0
ERR_BAD_REQUEST: Final = 1
ERR_ACCESS_DENIED: Final = 2
ERR_REQUEST_FAILED: Final = 3
ERR_UNKNOWN_COMMAND: Final = 4
ERR_SYSTEM_NOT_FOUND: Final = 5
ERR_MODULE_NOT_FOUND: Final = 6
ERR_UNEXPECTED_FAILURE: Final = 7


_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_HEADER16: Final = struct.Struct("!BBH")
_HEADER64: Final = struct.Struct("!BBQ")
_WRITE_BATCH: Final = 512  # text frames joined into one transport write


def _dumps(value: Any) -> str:
    """Compact JSON as the Crystal server writes it (one shared encoder, fast scalars)."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    return _ENCODE(value)


def _text_frame(text: str) -> bytes:
    """A final, unmasked server TEXT frame (RFC 6455 §5.2), no extensions."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return _HEADER16.pack(0x81, 126, size) + payload
    return _HEADER64.pack(0x81, 127, size) + payload


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


class BindingKey(NamedTuple):
    """(sys, mod, index, name): what a bind names and what ``meta`` echoes."""

    sys: str
    mod: str
    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: protocol name
    name: str


class Request(NamedTuple):
    """A request that passed strict parsing."""

    id: int
    cmd: str
    sys: str
    mod: str
    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: protocol name
    name: str
    args: list[Any]


def parse_request(text: str) -> Request | None:
    """Parse a request frame like the real server: anything not exactly right gives ``None``.

    Keys: ``id`` (integer, not bool, int64), ``cmd`` (bind/unbind/exec/debug/ignore, case
    insensitive like Crystal enums), ``sys``/``mod``/``name`` (strings), optional ``index``
    (int32, default 1) and ``args`` (array or null, default []). Any other key fails.
    """
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return None
    if type(data) is not dict:
        return None
    keys = data.keys()
    if not keys <= _REQUEST_KEYS or not keys >= _REQUIRED_KEYS:
        return None
    ident = data["id"]
    cmd = data["cmd"]
    sys_id = data["sys"]
    mod = data["mod"]
    name = data["name"]
    index = data.get("index", 1)
    args = data.get("args")
    if type(ident) is not int or not _INT64_MIN <= ident <= _INT64_MAX:
        return None
    if type(index) is not int or not _INT32_MIN <= index <= _INT32_MAX:
        return None
    if type(cmd) is not str or (cmd := cmd.lower()) not in _COMMANDS:
        return None
    if type(sys_id) is not str or type(mod) is not str or type(name) is not str:
        return None
    if args is None:
        args = []
    elif type(args) is not list:
        return None
    return Request(ident, cmd, sys_id, mod, index, name, args)


@dataclass
class ApiKey:
    """How the simulator treats one credential (API key or bearer token)."""

    admin: bool = False
    scopes_ok: bool = True


class _RawText(bytes):
    """Bytes sent as a TEXT frame as they are (lets tests send invalid UTF-8)."""


class _Pong:
    """Outbox marker: answer a protocol-level Ping with an empty Pong."""


_PONG: Final = _Pong()
_OutItem = str | bytes | _Pong


class Delivery:
    """What a control-API call queued. ``await`` it to wait until those frames were handed to
    the sockets (or the sockets went away). Not awaiting it is fine."""

    __slots__ = ("_targets", "frames")

    def __init__(self, targets: list[tuple[_Connection, int]] | None = None, frames: int = 0):
        self._targets = targets or []
        self.frames = frames  # number of frames queued over all sockets

    @property
    def sockets(self) -> int:
        """How many sockets got at least one frame."""
        return len(self._targets)

    def __await__(self) -> Generator[Any]:
        return self._wait().__await__()

    async def _wait(self) -> None:
        pending = [f for c, seq in self._targets if (f := c.delivered(seq)) is not None]
        if pending:
            await asyncio.gather(*pending)

    def __repr__(self) -> str:
        return f"<Delivery frames={self.frames} sockets={self.sockets}>"


class Dropped:
    """Result of ``drop_connections()``: ``count`` sockets were cut. ``await`` it to wait until
    the simulator has finished cleaning them up (their bindings are gone)."""

    __slots__ = ("_conns", "_sim", "count")

    def __init__(self, sim: PlaceOSSimulator, conns: list[_Connection]) -> None:
        self._sim = sim
        self._conns = conns
        self.count = len(conns)

    def __await__(self) -> Generator[Any]:
        return self._sim.wait_for(self._gone).__await__()

    def _gone(self) -> bool:
        return not any(conn in self._sim._conns for conn in self._conns)

    def __repr__(self) -> str:
        return f"<Dropped count={self.count}>"


class _Connection:
    """One open control WebSocket: its bindings, ordered outbox and background tasks."""

    def __init__(
        self,
        sim: PlaceOSSimulator,
        ws: web.WebSocketResponse,
        *,
        transport: asyncio.Transport | None,
        protocol: BaseProtocol | None,
        key: ApiKey,
        peer: str,
    ) -> None:
        self.sim = sim
        self.ws = ws
        self.transport = transport
        self.protocol = protocol
        self.key = key
        self.peer = peer
        self.bindings: dict[BindingKey, int] = {}
        self.debugging: dict[str, tuple[int, BindingKey]] = {}  # module id -> (id, meta)
        self.outbox: deque[_OutItem] = deque()
        self.queued = 0
        self.written = 0
        self.closed = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self._held: list[list[Frame]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_ids = itertools.count()
        self._wakeup = asyncio.Event()
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"placeos-sim-writer-{peer}"
        )

    # -- sending ---------------------------------------------------------------------------

    def send(self, item: _OutItem) -> int:
        """Queue one frame; returns its sequence number (see ``delivered``)."""
        if not self.closed:
            self.outbox.append(item)
            self.queued += 1
            self._wakeup.set()
        return self.queued

    def send_many(self, items: list[str]) -> int:
        """Queue frames in order; returns the sequence number of the last."""
        if not self.closed and items:
            self.outbox.extend(items)
            self.queued += len(items)
            self._wakeup.set()
        return self.queued

    def delivered(self, seq: int) -> asyncio.Future[None] | None:
        """A future done once frame ``seq`` was written, or None if it already was."""
        if self.closed or self.written >= seq:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._waiter_ids), future))
        return future

    def _release_waiters(self, everything: bool = False) -> None:
        waiters = self._waiters
        while waiters and (everything or waiters[0][0] <= self.written):
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)

    async def _write_loop(self) -> None:
        outbox = self.outbox
        ws = self.ws
        sim = self.sim
        wakeup = self._wakeup
        transport = self.transport
        protocol = self.protocol
        try:
            while True:
                if not outbox:
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                if type(outbox[0]) is str:
                    # The hot path: consecutive text frames go out in one write (one syscall)
                    # instead of one aiohttp send_str each.
                    chunk: list[str] = []
                    while outbox and type(outbox[0]) is str and len(chunk) < _WRITE_BATCH:
                        chunk.append(cast(str, outbox.popleft()))
                    self.written += len(chunk)
                    if not sim.silent:
                        if transport is None or transport.is_closing() or ws.closed:
                            self._gone("socket closed")
                            return
                        transport.write(b"".join(map(_text_frame, chunk)))
                        if protocol is not None:
                            await protocol._drain_helper()  # waits only while paused
                elif not sim.silent:
                    item = outbox.popleft()
                    self.written += 1
                    if type(item) is _RawText:
                        await ws.send_frame(bytes(item), WSMsgType.TEXT)
                    elif type(item) is bytes:
                        await ws.send_bytes(item)
                    else:
                        await ws.pong()
                else:
                    outbox.popleft()
                    self.written += 1
                if self._waiters and self._waiters[0][0] <= self.written:
                    self._release_waiters()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the socket went away under us
            self._gone(repr(err))
        finally:
            self._release_waiters(everything=True)

    def _gone(self, reason: str) -> None:
        _LOGGER.debug("writer for %s stopped: %s", self.peer, reason)
        self.closed = True
        self.outbox.clear()

    # -- replies with fault switches ----------------------------------------------------

    def hold(self, frames: list[Frame], delay: float, window: float) -> None:
        """Collect reply groups and send them in reverse order of arrival (``out_of_order``)."""
        self._held.append(frames)
        if self._flush_task is None:
            self._flush_task = self.spawn(self._flush_held(delay + window))

    async def _flush_held(self, after: float) -> None:
        await asyncio.sleep(after)
        groups, self._held = self._held, []
        self._flush_task = None
        for group in reversed(groups):
            self.send_many(_built(group))

    async def send_later(self, frames: list[Frame], delay: float) -> None:
        """Send frames after a delay (``reply_delay``)."""
        await asyncio.sleep(delay)
        self.send_many(_built(frames))

    # -- lifecycle -----------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run a coroutine tied to this connection (cancelled when it closes)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def abort(self) -> None:
        """Cut the TCP connection without a close frame."""
        if self.transport is not None:
            self.transport.abort()

    async def close(self) -> None:
        """Stop the writer and every task of this connection and wait for them."""
        self.closed = True
        tasks = [*self.tasks, self._writer]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.outbox.clear()
        self._release_waiters(everything=True)


type Frame = str | Callable[[], str | None]
"""A frame to send, or a function that builds it when it is sent (None: nothing to send)."""


def _built(frames: list[Frame]) -> list[str]:
    """The frames as text, lazily built ones built now and left out if they build nothing."""
    texts: list[str] = []
    for frame in frames:
        text = frame if isinstance(frame, str) else frame()
        if text is not None:
            texts.append(text)
    return texts


def _error_frame(ident: int, error_code: int, message: str, code: int = 500) -> str:
    return _dumps(
        {"id": ident, "type": "error", "error_code": error_code, "msg": message, "code": code}
    )


class PlaceOSSimulator:
    """A PlaceOS server for tests, benchmarks and demos. See the package docstring."""

    def __init__(
        self,
        scenario: Scenario | None = None,
        api_keys: Iterable[str] = ("test-key",),
        *,
        admin_keys: Iterable[str] = (),
        value_encoding: str = "raw",
        notify_before_success: bool = False,
        unsolicited_pong_interval: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        enforce_domain: bool = False,
    ) -> None:
        self.scenario = scenario if scenario is not None else Scenario.demo()
        self.keys: dict[str, ApiKey] = {key: ApiKey() for key in api_keys}
        for key in admin_keys:
            self.keys[key] = ApiKey(admin=True)
        self.value_encoding = value_encoding
        self.notify_before_success = notify_before_success
        self.unsolicited_pong_interval = unsolicited_pong_interval
        self.ssl_context = ssl_context
        self.enforce_domain = enforce_domain

        # Fault switches.
        self.answer_ping = True
        self.silent = False
        self.reply_delay = 0.0
        self.drop_replies = False
        self.out_of_order = False
        self.out_of_order_window = 0.02
        self._drop_budget = 0
        self._reject_budget = 0
        self._reject_status = 401

        # Counters.
        self.total_connections = 0
        self.handshakes_rejected = 0
        self.frames_received = 0
        self.frames_ignored = 0
        self.bind_requests = 0
        self.unbind_requests = 0
        self.exec_requests = 0
        self.debug_requests = 0
        self.replies_dropped = 0
        self.rest_requests = 0
        self.requests: deque[Request] = deque(maxlen=1000)  # the latest parsed requests

        self.host = "127.0.0.1"
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._conns: set[_Connection] = set()
        self._subs: dict[BindingKey, dict[_Connection, int]] = {}
        self._debug_subs: dict[str, set[_Connection]] = {}
        self._meta_json: dict[BindingKey, str] = {}
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._pong_task: asyncio.Task[None] | None = None
        self._activity_task: asyncio.Task[None] | None = None

    # ==================================================================================
    # Lifecycle
    # ==================================================================================

    @property
    def value_encoding(self) -> str:
        """``raw`` (value embedded as JSON, the real server) or ``string`` (stringified)."""
        return self._value_encoding

    @value_encoding.setter
    def value_encoding(self, encoding: str) -> None:
        if encoding not in ("raw", "string"):
            raise ValueError(f"value_encoding must be 'raw' or 'string', not {encoding!r}")
        self._value_encoding = encoding

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._runner is not None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8081`` (``https`` with an ``ssl_context``)."""
        if self.port is None:
            raise RuntimeError("the simulator has not been started")
        scheme = "https" if self.ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The control WebSocket URL (``ws://…`` or ``wss://…``)."""
        return "ws" + self.url.removeprefix("http") + CONTROL_PATH

    @property
    def connections(self) -> int:
        """Currently open control sockets."""
        return len(self._conns)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = any free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
        runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=1.0)
        try:
            await runner.setup()
            site = web.SockSite(runner, sock, ssl_context=self.ssl_context)
            await site.start()
        except BaseException:  # pragma: no cover - defensive, setup does not fail in practice
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = host
        self.port = sock.getsockname()[1]
        if self.unsolicited_pong_interval:
            self._pong_task = asyncio.get_running_loop().create_task(
                self._unsolicited_pongs(self.unsolicited_pong_interval),
                name="placeos-sim-pong",
            )
        _LOGGER.debug("PlaceOS simulator listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Stop listening, abort every socket (no close frame) and end all tasks."""
        self.stop_activity()
        tasks = [t for t in (self._pong_task, self._activity_task) if t is not None]
        self._pong_task = self._activity_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self.drop_connections()
        await runner.cleanup()
        # Handlers normally cleaned up already; make sure nothing of ours is left running.
        for conn in list(self._conns):  # pragma: no cover - only if a handler was cancelled
            await self._close_connection(conn)
        self._changed()

    async def __aenter__(self) -> PlaceOSSimulator:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(CONTROL_PATH, self._handle_control)
        add_rest_routes(app, self)
        return app

    # ==================================================================================
    # Authentication
    # ==================================================================================

    def add_key(self, key: str, admin: bool = False, scopes_ok: bool = True) -> None:
        """Accept ``key`` (as API key or bearer token). ``scopes_ok=False`` answers 403."""
        self.keys[key] = ApiKey(admin=admin, scopes_ok=scopes_ok)

    def revoke_key(self, key: str) -> None:
        """Stop accepting ``key``; open sockets stay open (as on the real server)."""
        self.keys.pop(key, None)

    def reject_next_handshakes(self, count: int = 1, status: int = 401) -> None:
        """Answer the next ``count`` WebSocket handshakes with 401 or 403."""
        if status not in (401, 403):
            raise ValueError("status must be 401 or 403")
        self._reject_budget = count
        self._reject_status = status

    @staticmethod
    def credential(request: web.Request) -> str | None:
        """The credential the real server would use (first match wins)."""
        token = request.headers.get("X-API-Key")
        if token is None:
            token = request.query.get("api-key")
        if token is None:
            token = request.cookies.get("api-key")
        if token is None:
            authorization = request.headers.get("Authorization", "")
            if authorization[:7].lower() == "bearer ":
                token = authorization[7:].strip()
        if token is None:
            token = request.query.get("bearer_token")
        if token is None:
            token = request.cookies.get("bearer_token")
        return token

    def check_domain(self, request: web.Request) -> web.Response | None:
        """With ``enforce_domain``: 401 unless Host matches the authority's domain."""
        if not self.enforce_domain:
            return None
        domain = str(self.scenario.authority.get("domain") or "")
        domain = domain.split("://", 1)[-1].split("/", 1)[0].lower()
        host = (request.host or "").lower()
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if domain not in (host, hostname):
            return _unauthorized("authority not found")
        return None

    def authenticate(self, request: web.Request) -> ApiKey | web.Response:
        """The key's settings, or the 401/403 response the real server gives."""
        denied = self.check_domain(request)
        if denied is not None:
            return denied
        token = self.credential(request)
        if token is None:
            return _unauthorized("no credentials provided")
        key = self.keys.get(token)
        if key is None:
            return _unauthorized("invalid or expired credentials")
        if not key.scopes_ok:
            return web.Response(status=403)
        return key

    # ==================================================================================
    # Control WebSocket
    # ==================================================================================

    async def _handle_control(self, request: web.Request) -> web.StreamResponse:
        if self._reject_budget > 0:
            self._reject_budget -= 1
            self.handshakes_rejected += 1
            self._changed()
            if self._reject_status == 403:
                return web.Response(status=403)
            return _unauthorized("invalid or expired credentials")
        key = self.authenticate(request)
        if isinstance(key, web.Response):
            self.handshakes_rejected += 1
            self._changed()
            return key
        ws = web.WebSocketResponse(autoping=False, max_msg_size=0, compress=False)
        if not ws.can_prepare(request).ok:
            return web.Response(
                status=426, headers={"Upgrade": "websocket", "Connection": "Upgrade"}
            )
        await ws.prepare(request)
        conn = _Connection(
            self,
            ws,
            transport=request.transport,
            protocol=request.protocol,
            key=key,
            peer=str(request.remote),
        )
        self._conns.add(conn)
        self.total_connections += 1
        self._changed()
        try:
            await self._read_loop(conn)
        finally:
            await self._close_connection(conn)
        return ws

    async def _read_loop(self, conn: _Connection) -> None:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                self.frames_received += 1
                self._on_text(conn, msg.data)
            elif kind is WSMsgType.BINARY:
                self.frames_received += 1
                self.frames_ignored += 1  # the real server ignores binary frames
            elif kind is WSMsgType.PING:
                conn.send(_PONG)
            elif kind is WSMsgType.PONG:
                continue
            else:  # CLOSE, CLOSING, CLOSED, ERROR
                return
            if self._waiters:
                self._changed()

    async def _close_connection(self, conn: _Connection) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        for key in conn.bindings:
            subscribers = self._subs.get(key)
            if subscribers is not None:
                subscribers.pop(conn, None)
                if not subscribers:
                    del self._subs[key]
        for module_id in conn.debugging:
            self._unsubscribe_debug(conn, module_id)
        conn.bindings.clear()
        await conn.close()
        self._changed()

    def _on_text(self, conn: _Connection, text: str) -> None:
        if text == "ping":
            if self.answer_ping:
                conn.send("pong")
            return
        request = parse_request(text)
        if request is None:
            self.frames_ignored += 1
            return
        self.requests.append(request)
        cmd = request.cmd
        if cmd == "bind":
            self._bind(conn, request)
        elif cmd == "unbind":
            self._unbind(conn, request)
        elif cmd == "exec":
            self.exec_requests += 1
            conn.spawn(self._exec(conn, request))
        elif cmd == "debug":
            self._debug(conn, request)
        else:
            self._ignore(conn, request)

    def _meta(self, key: BindingKey) -> str:
        meta = self._meta_json.get(key)
        if meta is None:
            meta = _dumps({"sys": key.sys, "mod": key.mod, "index": key.index, "name": key.name})
            self._meta_json[key] = meta
        return meta

    def _encode(self, value: Any) -> str:
        encoded = _dumps(value)
        return _dumps(encoded) if self._value_encoding == "string" else encoded

    def _respond(self, conn: _Connection, reply: str, notify: Frame | None = None) -> None:
        """Send a request's reply (and the bind's initial notify) through the fault switches.

        A bind's initial notify is built when it is sent: a reply held back by `reply_delay` or
        `out_of_order` then carries the value current at that moment, as a slow server would,
        instead of one that changes made meanwhile have overtaken.
        """
        if self._drop_budget > 0 or self.drop_replies:
            self._drop_budget = max(0, self._drop_budget - 1)
            self.replies_dropped += 1
            frames: list[Frame] = [notify] if notify is not None else []
        elif notify is None:
            frames = [reply]
        elif self.notify_before_success:
            frames = [notify, reply]
        else:
            frames = [reply, notify]
        if not frames:
            return
        if self.out_of_order:
            conn.hold(frames, self.reply_delay, self.out_of_order_window)
        elif self.reply_delay > 0:
            conn.spawn(conn.send_later(frames, self.reply_delay))
        else:
            conn.send_many(_built(frames))

    def _bind(self, conn: _Connection, request: Request) -> None:
        self.bind_requests += 1
        if request.mod.startswith("_") and not conn.key.admin:
            self._respond(
                conn,
                _error_frame(request.id, ERR_ACCESS_DENIED, "attempted to access protected module"),
            )
            return
        key = BindingKey(request.sys, request.mod, request.index, request.name)
        meta = self._meta(key)
        notify: Frame | None = None
        if key not in conn.bindings:  # a rebind keeps the first id and sends no new notify
            conn.bindings[key] = request.id
            self._subs.setdefault(key, {})[conn] = request.id
            notify = functools.partial(self._initial_notify, key, request.id, meta)

        self._respond(conn, f'{{"id":{request.id},"type":"success","meta":{meta}}}', notify)

    def _initial_notify(self, key: BindingKey, ident: int, meta: str) -> str | None:
        """The notify carrying a binding's current value, or None while it has none."""
        module = self.scenario.module(key.sys, key.mod, key.index)
        value = module.status.get(key.name) if module is not None else None
        if value is None:
            return None
        return f'{{"id":{ident},"type":"notify","value":{self._encode(value)},"meta":{meta}}}'

    def _unbind(self, conn: _Connection, request: Request) -> None:
        self.unbind_requests += 1
        key = BindingKey(request.sys, request.mod, request.index, request.name)
        if conn.bindings.pop(key, None) is not None:
            subscribers = self._subs.get(key)
            if subscribers is not None:
                subscribers.pop(conn, None)
                if not subscribers:
                    del self._subs[key]
        self._respond(conn, f'{{"id":{request.id},"type":"success"}}')

    async def _exec(self, conn: _Connection, request: Request) -> None:
        reply = await self._run_exec(conn, request)
        self._respond(conn, reply)

    async def _run_exec(self, conn: _Connection, request: Request) -> str:
        ident = request.id
        system = self.scenario.system(request.sys)
        module = system.resolve(request.mod, request.index) if system is not None else None
        if system is None or module is None:
            return _error_frame(ident, ERR_MODULE_NOT_FOUND, "could not find module")
        spec = module.methods.get(request.name)
        if spec is None:
            return _error_frame(ident, ERR_BAD_REQUEST, f"could not find function {request.name}")
        if spec.privileged and not conn.key.admin:
            return _error_frame(
                ident,
                ERR_ACCESS_DENIED,
                f"attempted to access privileged function {request.name}",
            )
        if not module.running:
            return _error_frame(ident, ERR_UNEXPECTED_FAILURE, "module stopped")
        self._emit_exec_debug(system, module, request)
        try:
            value = await self._call_method(system, module, request, spec)
        except asyncio.CancelledError:
            raise
        except DriverError as err:
            return _error_frame(
                ident, ERR_REQUEST_FAILED, f"module raised: {err.message}", err.code
            )
        except UnexpectedFailure as err:
            return _error_frame(ident, ERR_UNEXPECTED_FAILURE, err.message)
        except Exception as err:  # any driver exception is error 3
            return _error_frame(ident, ERR_REQUEST_FAILED, f"module raised: {err}")
        try:
            encoded = self._encode(value)
        except (TypeError, ValueError) as err:
            return _error_frame(ident, ERR_UNEXPECTED_FAILURE, f"unserialisable result: {err}")
        meta = self._meta(BindingKey(request.sys, request.mod, request.index, request.name))
        return f'{{"id":{ident},"type":"success","value":{encoded},"meta":{meta},"code":200}}'

    async def _call_method(
        self, system: System, module: Module, request: Request, spec: MethodSpec
    ) -> Any:
        args = request.args
        if spec.handler is not None:
            result = spec.handler(*args)
            if inspect.isawaitable(result):
                result = await result
            return result
        if spec.delay:
            await asyncio.sleep(spec.delay)
        if spec.raises is not None:
            raise DriverError(spec.raises, spec.code)
        value: Any = None
        if spec.sets is not None:
            value = args[0] if args else None
            self._store(module, BindingKey(system.id, request.mod, request.index, spec.sets), value)
        return value if spec.returns is UNSET else spec.returns

    def _debug(self, conn: _Connection, request: Request) -> None:
        self.debug_requests += 1
        # The real client passes the module *id* as `mod` for debug.
        if self.scenario.module_by_id(request.mod) is None:
            self._respond(
                conn,
                _error_frame(request.id, ERR_UNEXPECTED_FAILURE, "failed to attach debugger"),
            )
            return
        if request.mod not in conn.debugging:
            meta = BindingKey(request.sys, request.mod, request.index, request.name)
            conn.debugging[request.mod] = (request.id, meta)
            self._debug_subs.setdefault(request.mod, set()).add(conn)
        self._respond(conn, f'{{"id":{request.id},"type":"success"}}')

    def _ignore(self, conn: _Connection, request: Request) -> None:
        self.debug_requests += 1
        if conn.debugging.pop(request.mod, None) is not None:
            self._unsubscribe_debug(conn, request.mod)
        self._respond(conn, f'{{"id":{request.id},"type":"success"}}')

    def _unsubscribe_debug(self, conn: _Connection, module_id: str) -> None:
        listeners = self._debug_subs.get(module_id)
        if listeners is not None:
            listeners.discard(conn)
            if not listeners:
                del self._debug_subs[module_id]

    def _emit_exec_debug(self, system: System, module: Module, request: Request) -> None:
        if module.id in self._debug_subs:
            arguments = _dumps(request.args)[1:-1]
            self.emit_debug(module.id, f"exec {request.name}({arguments})", "debug")

    async def _unsolicited_pongs(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for conn in list(self._conns):
                conn.send("pong")

    # ==================================================================================
    # Control API: statuses
    # ==================================================================================

    def get_status(self, sys: str, mod: str, index: int, name: str, default: Any = None) -> Any:
        """The current value of a status (``default`` if it has none)."""
        module = self.scenario.module(sys, mod, index)
        if module is None:
            return default
        return module.status.get(name, default)

    def set_status(
        self, sys: str, mod: str, index: int, name: str, value: Any, *, force: bool = False
    ) -> Delivery:
        """Set a status and notify bound sockets (only on a change unless ``force``).

        Creates the system/module if they do not exist (so a bind to an unknown target starts
        receiving values). ``None`` deletes the status (notify ``null``).
        """
        module = self._ensure_module(sys, mod, index)
        previous = module.status.get(name)
        if value is None:
            module.status.pop(name, None)
        else:
            module.status[name] = value
        if not force and type(previous) is type(value) and previous == value:
            return Delivery()
        return self._notify(BindingKey(sys, mod, index, name), value)

    def delete_status(self, sys: str, mod: str, index: int, name: str) -> Delivery:
        """Remove a status; bound sockets get ``"value": null``."""
        module = self.scenario.module(sys, mod, index)
        if module is None or name not in module.status:
            return Delivery()
        del module.status[name]
        return self._notify(BindingKey(sys, mod, index, name), None)

    def burst(self, sys: str, mod: str, index: int, name: str, values: Iterable[Any]) -> Delivery:
        """Notify every value in order (no change detection); the status ends at the last one.

        Each value is encoded once; each bound socket gets its frames queued in one go.
        """
        module = self._ensure_module(sys, mod, index)
        key = BindingKey(sys, mod, index, name)
        values = list(values)
        if not values:
            return Delivery()
        last = values[-1]
        if last is None:
            module.status.pop(name, None)
        else:
            module.status[name] = last
        subscribers = self._subs.get(key)
        if not subscribers or self.silent:
            return Delivery()
        meta = self._meta(key)
        encode = self._encode
        tails = [
            f',"type":"notify","value":{"null" if v is None else encode(v)},"meta":{meta}}}'
            for v in values
        ]
        targets: list[tuple[_Connection, int]] = []
        for conn, bind_id in subscribers.items():
            head = f'{{"id":{bind_id}'
            targets.append((conn, conn.send_many([head + tail for tail in tails])))
        return Delivery(targets, len(tails) * len(targets))

    def _notify(self, key: BindingKey, value: Any) -> Delivery:
        subscribers = self._subs.get(key)
        if not subscribers or self.silent:
            return Delivery()
        tail = (
            f',"type":"notify","value":{"null" if value is None else self._encode(value)},'
            f'"meta":{self._meta(key)}}}'
        )
        targets = [
            (conn, conn.send(f'{{"id":{bind_id}{tail}')) for conn, bind_id in subscribers.items()
        ]
        return Delivery(targets, len(targets))

    def _store(self, module: Module, key: BindingKey, value: Any) -> None:
        """A method or the activity changed a status: store and notify like ``set_status``."""
        previous = module.status.get(key.name)
        if value is None:
            module.status.pop(key.name, None)
        else:
            module.status[key.name] = value
        if type(previous) is not type(value) or previous != value:
            self._notify(key, value)

    def _ensure_module(self, sys: str, mod: str, index: int) -> Module:
        system = self.scenario.system(sys)
        if system is None:
            system = System(id=sys, name=sys)
            self.scenario.systems.append(system)
        module = system.resolve(mod, index)
        if module is None:
            count = system.types().get(mod, 0)
            for number in range(count + 1, index + 1):
                system.modules.append(Module(id=f"mod-{sys}-{mod}-{number}", name=mod))
            system.reindex()
            module = system.resolve(mod, index)
            if module is None:
                raise ValueError(f"no module {mod}_{index} in {sys}")
        return module

    def set_method(
        self,
        sys: str,
        mod: str,
        index: int,
        name: str,
        handler: MethodHandler | MethodSpec | None,
        *,
        privileged: bool = False,
    ) -> None:
        """Script a method: ``handler(*args)`` (sync or async) returns the exec value.

        Pass a ``MethodSpec`` for declarative behaviour, or ``None`` to remove the method
        (exec then gives error 1). The module is created if needed.
        """
        module = self._ensure_module(sys, mod, index)
        if handler is None:
            module.methods.pop(name, None)
        elif isinstance(handler, MethodSpec):
            module.methods[name] = handler
        else:
            module.methods[name] = MethodSpec(handler=handler, privileged=privileged)

    def emit_debug(self, module_id: str, message: str, level: str = "info") -> Delivery:
        """Send a ``debug`` frame to the sockets debugging ``module_id``."""
        if level not in DEBUG_LEVELS:
            raise ValueError(f"level must be one of {DEBUG_LEVELS}")
        targets = []
        for conn in self._debug_subs.get(module_id, ()):
            ident, meta = conn.debugging[module_id]
            frame = _dumps(
                {
                    "id": ident,
                    "type": "debug",
                    "msg": message,
                    "meta": meta._asdict(),
                    "mod": module_id,
                    "level": level,
                }
            )
            targets.append((conn, conn.send(frame)))
        return Delivery(targets, len(targets))

    # ==================================================================================
    # Control API: faults, sockets, counters
    # ==================================================================================

    def drop_next_replies(self, count: int = 1) -> None:
        """Drop the replies (success/error) to the next ``count`` requests."""
        self._drop_budget = count

    def drop_connections(self) -> Dropped:
        """Abort every socket's TCP connection without a close frame.

        Returns a :class:`Dropped` (``.count``); ``await`` it to wait until the server side
        has cleaned those sockets up.
        """
        conns = list(self._conns)
        for conn in conns:
            conn.abort()
        return Dropped(self, conns)

    def inject_frame(self, data: str | bytes, *, text: bool | None = None) -> Delivery:
        """Send a raw frame to every socket: ``str`` as TEXT, ``bytes`` as BINARY, or bytes as
        a TEXT frame with ``text=True`` (for invalid UTF-8)."""
        if isinstance(data, bytes) and text:
            item: _OutItem = _RawText(data)
        elif isinstance(data, str) and text is False:
            item = data.encode()
        else:
            item = data
        targets = [(conn, conn.send(item)) for conn in self._conns]
        return Delivery(targets, len(targets))

    def bound_keys(self) -> set[BindingKey]:
        """Every (sys, mod, index, name) that at least one socket is bound to."""
        return set(self._subs)

    def subscribers(self, sys: str, mod: str, index: int, name: str) -> int:
        """How many sockets are bound to this key."""
        return len(self._subs.get(BindingKey(sys, mod, index, name), ()))

    def _changed(self) -> None:
        if not self._waiters:
            return
        for predicate, future in list(self._waiters):
            if not future.done() and predicate():
                future.set_result(None)

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - a plain timeout keeps test code short
    ) -> None:
        """Wait until ``predicate()`` holds (checked on every connection change and frame).

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        finally:
            self._waiters.remove(entry)

    async def wait_connections(self, count: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until at least ``count`` sockets are open."""
        await self.wait_for(lambda: len(self._conns) >= count, timeout)

    # ==================================================================================
    # Demo activity
    # ==================================================================================

    def start_activity(self, interval: float = 5.0, seed: int | None = None) -> None:
        """Let occupancy sensors change every ``interval`` seconds (stopped by ``stop``)."""
        self.stop_activity()
        rng = random.Random(seed)
        self._activity_task = asyncio.get_running_loop().create_task(
            self._activity_loop(interval, rng), name="placeos-sim-activity"
        )

    def stop_activity(self) -> None:
        """Stop the demo activity (its task ends at the next loop iteration)."""
        if self._activity_task is not None:
            self._activity_task.cancel()
            # Keep the reference: stop() awaits it; a later start_activity replaces it.

    async def _activity_loop(self, interval: float, rng: random.Random) -> None:
        while True:
            await asyncio.sleep(interval)
            self.activity_tick(rng)

    def activity_tick(self, rng: random.Random | None = None) -> None:
        """One step of demo activity: every module with ``people_count`` changes by ±1."""
        rng = rng or random.Random()
        for system in self.scenario.systems:
            counts: dict[str, int] = {}
            for module in system.modules:
                binding = module.binding_name
                counts[binding] = counts.get(binding, 0) + 1
                current = module.status.get("people_count")
                if type(current) is not int:
                    continue
                limit = system.capacity or 20
                people = current + rng.choice((-1, 1))
                if people < 0 or people > limit:
                    people = current - (people - current)
                people = max(0, min(limit, people))
                index = counts[binding]
                self._store(module, BindingKey(system.id, binding, index, "people_count"), people)
                self._store(module, BindingKey(system.id, binding, index, "presence"), people > 0)


def _unauthorized(message: str) -> web.Response:
    return web.json_response({"error": message}, status=401)


__all__ = [
    "CONTROL_PATH",
    "ApiKey",
    "BindingKey",
    "Delivery",
    "PlaceOSSimulator",
    "Request",
    "parse_request",
]
