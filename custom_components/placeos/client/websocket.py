"""The PlaceOS control WebSocket: connection, keep-alive, reconnect, bind/unbind/exec.

One `PlaceOSWebSocket` keeps one socket to `/api/engine/v2/systems/control` open for as long as
`run()` runs. It re-binds every registered status after each reconnect (the server does not
replay values changed while the socket was down) and routes each `notify` by its `meta` to the
one callback registered for that binding. A bind that gets no reply in time is refreshed on the
open socket (unbind, bind) until one does, so a lost or late reply never leaves a wrong value
for the life of the socket.

Transport choices:
- `heartbeat=None`: PlaceOS's own keep-alive is the text `ping`; anything received proves the
  socket alive (bytes, not just complete frames: see `_watch_bytes`), and `dead_after` seconds
  without anything declare it dead.
- `max_msg_size=0` (no limit): aiohttp closes the socket on a frame above its limit. A status
  value larger than the limit (a long bookings list) would then be sent again by the initial
  notify after every re-bind, a reconnect loop that never ends. The server itself sets no limit.
- No compression: the server does not negotiate any.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
import contextlib
import itertools
import json
import logging
import random
import re
from typing import Any, Final

import aiohttp

from .decode import FAST_FLOAT_EXACT, ValueDecoding, decode_auto, fast_loads, parse_decoding
from .errors import (
    PlaceOSAuthError,
    PlaceOSCommandError,
    PlaceOSConnectionError,
    PlaceOSError,
    PlaceOSForbiddenError,
    PlaceOSNotConnectedError,
    PlaceOSTimeoutError,
    PlaceOSTLSError,
)
from .models import BindingKey, ConnectionState, NotifyCallback, StateCallback, websocket_url

_LOGGER: Final = logging.getLogger(__name__)

# Upper bound for the WebSocket close handshake; a peer that does not answer is cut off.
CLOSE_TIMEOUT: Final = 2.0
# Backoff exponent cap: keeps 2**n a small float long after backoff_max is reached.
_MAX_BACKOFF_EXPONENT: Final = 30
# How much of an ignored frame a debug line shows.
_LOG_FRAME_CHARS: Final = 200

_WS_TEXT: Final = aiohttp.WSMsgType.TEXT
_WS_BINARY: Final = aiohttp.WSMsgType.BINARY
_WS_ERROR: Final = aiohttp.WSMsgType.ERROR
_LIVE_STATES: Final = frozenset({ConnectionState.SYNCING, ConnectionState.CONNECTED})
# Errors a send on a closing or broken socket raises.
_SEND_ERRORS: Final = (ConnectionError, aiohttp.ClientError)

_json_loads: Final = json.loads
_fast_loads: Final = fast_loads
# Notify values `fast_loads` decodes exactly as `json.loads` does (floats: see _on_text).
_FAST_EXACT_TYPES: Final = frozenset({str, int, bool, type(None)})
_FAST_STRUCTURED_TYPES: Final = frozenset({list, dict})
# orjson turns an integer beyond 64 bits into a float, also inside lists and objects. Such an
# integer has at least 19 digits: a frame without a run of 19 digits holds none, so orjson's
# reading of its list or object is exact. (A long number in a string only costs the slow path.)
_MAYBE_BIG_INTEGER: Final = re.compile(r"\d{19}").search
_json_dumps: Final = json.dumps


def backoff_delay(
    attempt: int,
    backoff_min: float,
    backoff_max: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before reconnect attempt `attempt` (1 = the first after a loss).

    Exponential from backoff_min, capped at backoff_max, with jitter in the upper half
    (never below backoff_min) so that many clients do not reconnect in step.
    """
    exponent = min(max(attempt, 1), _MAX_BACKOFF_EXPONENT) - 1
    base = min(backoff_max, backoff_min * 2**exponent)
    return uniform(max(backoff_min, base / 2), base)


class _Binding:
    """A registered binding: its callback and what was already logged about it."""

    __slots__ = (
        "bind_error_logged",
        "callback",
        "callback_error_logged",
        "key",
        "superseded_below",
    )

    def __init__(self, key: BindingKey, callback: NotifyCallback) -> None:
        self.key = key
        self.callback = callback
        self.callback_error_logged = False
        self.bind_error_logged = False
        # Notifies carrying a smaller id come from a binding the server has confirmed to be
        # gone (see `_refresh`): late leftovers, dropped.
        self.superseded_below = 0


def _nothing() -> None:
    """Nothing to undo."""


def _older_than(frame: dict[str, Any], request_id: int) -> bool:
    """True if a notify names a bind sent before `request_id` (its `id` is that bind's)."""
    frame_id = frame.get("id")
    return type(frame_id) is int and frame_id < request_id


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a failed future's exception as seen.

    A future failed on connection loss may belong to a request whose task was cancelled in
    the same moment; without this asyncio would log "exception was never retrieved".
    """
    if future.done() and not future.cancelled():
        future.exception()


class PlaceOSWebSocket:
    """Client of the PlaceOS control WebSocket; takes an aiohttp session from outside."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        api_key: str,
        *,
        verify_ssl: bool = True,
        value_decoding: str = "auto",
        request_timeout: float = 10.0,
        exec_timeout: float = 10.0,
        ping_interval: float = 15.0,
        dead_after: float = 45.0,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        """Create the client; nothing is opened before `run()` or `probe()`.

        `url` is the instance URL (`https://host[:port]`); the socket URL is derived from it.
        `request_timeout` also bounds the opening handshake.
        """
        if min(request_timeout, exec_timeout, ping_interval, dead_after) <= 0:
            raise ValueError("timeouts and intervals must be positive")
        if not 0 < backoff_min <= backoff_max:
            raise ValueError("backoff_min must be positive and at most backoff_max")
        self._session = session
        self._ws_url = websocket_url(url)
        self._api_key = api_key
        self._ssl = verify_ssl
        self._decoding = parse_decoding(value_decoding)
        self._auto = self._decoding is ValueDecoding.AUTO
        self._request_timeout = request_timeout
        self._exec_timeout = exec_timeout
        self._ping_interval = ping_interval
        self._dead_after = dead_after
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._close_timeout = min(CLOSE_TIMEOUT, dead_after)

        self._state = ConnectionState.DISCONNECTED
        self._state_listeners: list[StateCallback] = []
        self._state_waiters: set[asyncio.Future[None]] = set()
        # Keyed by plain 4-tuples: a notify's meta builds one cheaply, and a BindingKey (a
        # NamedTuple) hashes and compares equal to it.
        self._bindings: dict[tuple[str, str, int, str], _Binding] = {}
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = itertools.count(1).__next__

        self._running = False
        self._closing = False
        self._close_event = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connect_task: asyncio.Task[aiohttp.ClientWebSocketResponse] | None = None
        self._reader_task: asyncio.Task[PlaceOSError] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._conn_tasks: set[asyncio.Task[Any]] = set()
        self._last_rx = 0.0
        self._loss_reason: PlaceOSError | None = None
        # Bindings to bind again on the open socket: their bind got no reply in time.
        self._refresh_keys: set[BindingKey] = set()
        self._refresh_task: asyncio.Task[None] | None = None
        self._last_error: PlaceOSError | None = None

        self._connects = 0
        self._disconnects = 0
        self._notifies = 0
        self._notifies_unrouted = 0
        self._frames_ignored = 0
        self._replies_unmatched = 0
        self._requests_timed_out = 0
        self._callback_errors = 0
        self._pongs = 0
        self._bind_refreshes = 0
        self._notifies_superseded = 0

    def __repr__(self) -> str:
        return f"<PlaceOSWebSocket {self._ws_url} {self._state.value}>"

    # ------------------------------------------------------------------ public surface

    @property
    def state(self) -> ConnectionState:
        """The current connection state."""
        return self._state

    @property
    def connected(self) -> bool:
        """True while the socket is open (SYNCING or CONNECTED)."""
        return self._state in _LIVE_STATES

    @property
    def url(self) -> str:
        """The WebSocket URL (never holds credentials)."""
        return str(self._ws_url)

    @property
    def bindings(self) -> Mapping[BindingKey, NotifyCallback]:
        """A snapshot of the registered bindings and their callbacks."""
        return {binding.key: binding.callback for binding in self._bindings.values()}

    def add_state_listener(self, callback: StateCallback) -> Callable[[], None]:
        """Call `callback(state, reason)` on every state transition; returns the remover."""
        self._state_listeners.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._state_listeners.remove(callback)

        return remove

    def add_bindings(self, bindings: Mapping[BindingKey, NotifyCallback]) -> None:
        """Register bindings; bind the new ones now if the socket is open.

        A key already registered only gets its callback replaced: the server would not send
        its initial notify again anyway.
        """
        new_keys: list[BindingKey] = []
        for raw_key, callback in bindings.items():
            key = raw_key if type(raw_key) is BindingKey else BindingKey(*raw_key)
            if (existing := self._bindings.get(key)) is not None:
                existing.callback = callback
                continue
            self._bindings[key] = _Binding(key, callback)
            new_keys.append(key)
        ws = self._ws
        if new_keys and ws is not None and self._state in _LIVE_STATES:
            self._spawn(self._bind(ws, new_keys), "placeos-bind")

    def remove_bindings(self, keys: Iterable[BindingKey]) -> None:
        """Unregister bindings (no more callbacks); unbind them now if the socket is open."""
        removed = [key for key in keys if self._bindings.pop(key, None) is not None]
        ws = self._ws
        if removed and ws is not None and self._state in _LIVE_STATES:
            self._spawn(self._request_many(ws, "unbind", removed), "placeos-unbind")

    async def run(self) -> None:
        """Connect and stay connected until `close()` or an authentication failure.

        Never raises except CancelledError; being cancelled closes the client.
        """
        if self._running:
            raise RuntimeError("run() is already running")
        if self._closing:
            return
        self._running = True
        loop = asyncio.get_running_loop()
        attempt = 0
        try:
            while not self._closing:
                self._set_state(ConnectionState.CONNECTING, None)
                connect_task = loop.create_task(self._open(), name="placeos-connect")
                self._connect_task = connect_task
                try:
                    await asyncio.wait((connect_task,))
                except asyncio.CancelledError:
                    connect_task.cancel()
                    await self._discard_connect(connect_task)
                    raise
                finally:
                    self._connect_task = None
                if self._stopping():  # close() during the handshake
                    await self._discard_connect(connect_task)
                    break
                error = connect_task.exception()
                if isinstance(error, PlaceOSAuthError):
                    self._last_error = error
                    self._set_state(ConnectionState.AUTH_FAILED, error)
                    return
                if isinstance(error, PlaceOSError):
                    reason = error
                elif error is not None:
                    reason = PlaceOSConnectionError(f"unexpected error while connecting: {error}")
                    # Logged once per kind of failure, not on every retry.
                    if str(reason) != str(self._last_error):
                        _LOGGER.error("Unexpected error connecting to PlaceOS", exc_info=error)
                else:
                    started = loop.time()
                    reason, synced = await self._serve(connect_task.result())
                    if self._stopping():
                        break
                    self._disconnects += 1
                    # A connection that synced and outlived one liveness window was stable:
                    # the next outage starts its backoff from the bottom again.
                    if synced and loop.time() - started >= self._dead_after:
                        attempt = 0
                if self._stopping():
                    break
                self._last_error = reason
                self._set_state(ConnectionState.DISCONNECTED, reason)
                if _LOGGER.isEnabledFor(logging.DEBUG):
                    _LOGGER.debug("PlaceOS connection to %s down: %s", self._ws_url, reason)
                attempt += 1
                await self._backoff(attempt)
        except asyncio.CancelledError:
            self._closing = True
            self._set_state(ConnectionState.CLOSED, None)
            raise
        finally:
            self._running = False

    async def wait_connected(self, timeout: float) -> None:  # noqa: ASYNC109 - the interface
        """Return once CONNECTED; raise the reason it is not within `timeout` seconds.

        Raises the PlaceOSAuthError at once when the handshake was rejected, otherwise after
        `timeout` the last connection error, or PlaceOSTimeoutError when there was none.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    state = self._state
                    if state is ConnectionState.CONNECTED:
                        return
                    if state is ConnectionState.AUTH_FAILED and self._last_error is not None:
                        raise self._last_error.with_traceback(None)
                    if state is ConnectionState.CLOSED:
                        raise PlaceOSConnectionError("the client is closed")
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._state_waiters.add(waiter)
                    try:
                        await waiter
                    finally:
                        self._state_waiters.discard(waiter)
        except TimeoutError:
            last_error = self._last_error
            if last_error is not None and self._state is not ConnectionState.SYNCING:
                raise last_error.with_traceback(None) from None
            raise PlaceOSTimeoutError(f"not connected within {timeout:g} s") from None

    async def exec(
        self,
        sys: str,
        mod: str,
        index: int,
        name: str,
        args: Sequence[Any] = (),
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - per-call override, as documented
    ) -> Any:
        """Call a driver method; return its (decoded) return value.

        Raises PlaceOSNotConnectedError at once when the socket is not open,
        PlaceOSTimeoutError without a reply in time, PlaceOSCommandError on an error reply and
        PlaceOSConnectionError when the socket is lost while waiting.
        """
        if type(index) is not int or index < 1:
            raise ValueError("index must be an integer >= 1")
        ws = self._ws
        if ws is None or self._state not in _LIVE_STATES:
            raise PlaceOSNotConnectedError("not connected to PlaceOS")
        request_id = self._next_id()
        payload = _json_dumps(
            {
                "id": request_id,
                "cmd": "exec",
                "sys": sys,
                "mod": mod,
                "index": index,
                "name": name,
                "args": list(args),
            },
            allow_nan=False,
        )
        wait_for = self._exec_timeout if timeout is None else timeout
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            try:
                # The send is inside the timeout: on a stalled socket it can wait on drain.
                async with asyncio.timeout(wait_for):
                    try:
                        await ws.send_str(payload)
                    except _SEND_ERRORS as err:
                        raise PlaceOSConnectionError("connection lost while sending exec") from err
                    frame = await future
            except TimeoutError:
                self._requests_timed_out += 1
                raise PlaceOSTimeoutError(
                    f"{mod}_{index}.{name} on {sys} got no reply within {wait_for:g} s"
                ) from None
        finally:
            self._pending.pop(request_id, None)
        value = frame.get("value")
        return decode_auto(value) if self._auto else value

    async def probe(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - the interface
        """Open a socket, send `ping`, wait for any frame, close it (for a config flow)."""
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            async with asyncio.timeout(timeout):
                ws = await self._open()
                await ws.send_str("ping")
                msg = await ws.receive()
        except TimeoutError:
            raise PlaceOSTimeoutError(
                f"no answer from {self._ws_url} within {timeout:g} s"
            ) from None
        except _SEND_ERRORS as err:
            raise PlaceOSConnectionError(f"connection to {self._ws_url} lost") from err
        finally:
            if ws is not None:
                await self._close_ws(ws)
        if msg.type is not _WS_TEXT and msg.type is not _WS_BINARY:
            raise PlaceOSConnectionError(f"{self._ws_url} closed the socket right after opening")

    async def close(self) -> None:
        """Close the socket and stop `run()`; idempotent and bounded in time."""
        self._closing = True
        self._close_event.set()
        self._set_state(ConnectionState.CLOSED, None)
        if self._connect_task is not None:
            self._connect_task.cancel()
        tasks = self._cancel_connection_tasks()
        self._fail_pending(PlaceOSConnectionError("the client was closed"))
        ws, self._ws = self._ws, None
        if ws is not None:
            await self._close_ws(ws)
        if tasks:
            await asyncio.wait(tasks, timeout=self._close_timeout)

    def diagnostics(self) -> dict[str, Any]:
        """Connection state and counters, without secrets."""
        last_error = self._last_error
        return {
            "state": self._state.value,
            "url": str(self._ws_url),
            "verify_ssl": self._ssl,
            "value_decoding": self._decoding.value,
            "connects": self._connects,
            "reconnects": max(0, self._connects - 1),
            "disconnects": self._disconnects,
            "notifies": self._notifies,
            "notifies_unrouted": self._notifies_unrouted,
            "frames_ignored": self._frames_ignored,
            "replies_unmatched": self._replies_unmatched,
            "requests_timed_out": self._requests_timed_out,
            "callback_errors": self._callback_errors,
            "pongs": self._pongs,
            "bindings": len(self._bindings),
            "pending_requests": len(self._pending),
            "bind_refreshes": self._bind_refreshes,
            "notifies_superseded": self._notifies_superseded,
            "bindings_to_refresh": len(self._refresh_keys),
            "last_error": (
                f"{type(last_error).__name__}: {last_error}" if last_error is not None else None
            ),
        }

    # ------------------------------------------------------------------ connection

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        """Open the socket; map every failure to a PlaceOS error without the key in it."""
        url = self._ws_url
        try:
            async with asyncio.timeout(self._request_timeout):
                return await self._session.ws_connect(
                    url,
                    headers={"X-API-Key": self._api_key},
                    ssl=self._ssl,
                    heartbeat=None,
                    autoping=True,
                    compress=0,
                    max_msg_size=0,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self._close_timeout),
                )
        except aiohttp.WSServerHandshakeError as err:
            # `from None`: the aiohttp error carries the request headers, key included.
            status = err.status
            if status == 401:
                raise PlaceOSAuthError(
                    f"{url.host} rejected the API key (HTTP 401); check the key and that the "
                    "URL uses the instance's domain name"
                ) from None
            if status == 403:
                raise PlaceOSForbiddenError(
                    f"{url.host} refused access (HTTP 403): the API key lacks a scope"
                ) from None
            raise PlaceOSConnectionError(
                f"WebSocket handshake with {url} failed: HTTP {status} ({err.message})",
                status=status,
            ) from None
        except aiohttp.ClientSSLError as err:
            raise PlaceOSTLSError(f"TLS error connecting to {url.host}: {err}") from err
        except TimeoutError:
            raise PlaceOSTimeoutError(
                f"no answer from {url} within {self._request_timeout:g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as err:
            raise PlaceOSConnectionError(f"cannot connect to {url}: {err}") from err

    def _stopping(self) -> bool:
        # A method, not the attribute: close() flips it while run() awaits, which mypy's
        # narrowing of `while not self._closing` cannot see.
        return self._closing

    async def _discard_connect(
        self, connect_task: asyncio.Task[aiohttp.ClientWebSocketResponse]
    ) -> None:
        """Wait for an abandoned handshake to end; close the socket if it opened anyway."""
        await asyncio.wait((connect_task,))
        if not connect_task.cancelled() and connect_task.exception() is None:
            await self._close_ws(connect_task.result())

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[PlaceOSError, bool]:
        """Run one open connection until it is lost; return why and whether it synced."""
        loop = asyncio.get_running_loop()
        self._ws = ws
        self._connects += 1
        self._last_rx = loop.time()
        self._loss_reason = None
        # Refreshes belong to one socket; a new socket binds everything anyway.
        self._refresh_keys.clear()
        self._refresh_task = None
        stop_watching = self._watch_bytes(ws)
        reader = loop.create_task(self._read_loop(ws), name="placeos-reader")
        self._reader_task = reader
        self._keepalive_task = loop.create_task(self._keepalive(ws, reader), name="placeos-ping")
        self._set_state(ConnectionState.SYNCING, None)
        keys = [binding.key for binding in self._bindings.values()]
        self._spawn(self._sync(ws, keys), "placeos-sync")
        try:
            await asyncio.wait((reader,))
        finally:
            synced = self._state is ConnectionState.CONNECTED
            if self._ws is ws:
                self._ws = None
            tasks = self._cancel_connection_tasks()
            self._fail_pending(PlaceOSConnectionError("the connection to PlaceOS was lost"))
            stop_watching()
            await self._close_ws(ws)
            if tasks:
                await asyncio.wait(tasks, timeout=self._close_timeout)
        reason: PlaceOSError
        if reader.cancelled():
            reason = self._loss_reason or PlaceOSConnectionError("connection closed")
        elif (error := reader.exception()) is not None:
            _LOGGER.error("Unexpected error reading from PlaceOS", exc_info=error)
            reason = PlaceOSConnectionError(f"unexpected error while reading: {error}")
        else:
            reason = reader.result()
        return reason, synced

    def _watch_bytes(self, ws: aiohttp.ClientWebSocketResponse) -> Callable[[], None]:
        """Count every chunk read from the socket as a sign of life; returns the undo.

        `dead_after` would otherwise run from the last *complete* frame: a frame that takes
        longer than that to arrive (a big value on a slow link, or a busy event loop) would
        get the socket declared dead mid-frame, and the re-bind would send the same frame
        again, forever. aiohttp has no public hook for this, so its protocol's
        `data_received` is wrapped; where its internals differ, frames alone count as before.
        """
        protocol = getattr(getattr(ws, "_conn", None), "protocol", None)
        received = getattr(protocol, "data_received", None)
        if protocol is None or received is None:
            return _nothing
        clock = asyncio.get_running_loop().time

        def data_received(data: bytes) -> None:
            self._last_rx = clock()
            received(data)

        try:
            protocol.data_received = data_received
        except AttributeError:
            return _nothing

        def stop() -> None:
            with contextlib.suppress(AttributeError):
                del protocol.data_received  # the class's own method again

        return stop

    def _cancel_connection_tasks(self) -> list[asyncio.Task[Any]]:
        """Cancel the reader, the keep-alive and the bind tasks; return them to await."""
        tasks: list[asyncio.Task[Any]] = [*self._conn_tasks]
        self._conn_tasks.clear()
        if self._keepalive_task is not None:
            tasks.append(self._keepalive_task)
            self._keepalive_task = None
        if self._reader_task is not None:
            tasks.append(self._reader_task)
            self._reader_task = None
        for task in tasks:
            task.cancel()
        return tasks

    async def _close_ws(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Close a socket; a peer that does not complete the handshake in time is cut off."""
        try:
            async with asyncio.timeout(self._close_timeout):
                await ws.close()
        except (TimeoutError, *_SEND_ERRORS) as err:
            # aiohttp closes the transport itself when its close is interrupted.
            if _LOGGER.isEnabledFor(logging.DEBUG):
                _LOGGER.debug("Closing the PlaceOS socket did not complete: %r", err)

    async def _backoff(self, attempt: int) -> None:
        """Wait before the next attempt: capped exponential, with jitter; close() wakes it."""
        delay = backoff_delay(attempt, self._backoff_min, self._backoff_max)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._close_event.wait()

    async def _keepalive(
        self, ws: aiohttp.ClientWebSocketResponse, reader: asyncio.Task[PlaceOSError]
    ) -> None:
        """Send `ping` every ping_interval; declare the socket dead after dead_after of silence.

        The first ping goes out right away, so a socket that opened but never delivers
        anything is caught by the same rule.
        """
        clock = asyncio.get_running_loop().time
        next_ping = clock()
        while True:
            now = clock()
            deadline = self._last_rx + self._dead_after
            if now >= deadline:
                self._loss_reason = PlaceOSTimeoutError(
                    f"nothing received for {self._dead_after:g} s"
                )
                reader.cancel()
                return
            if now >= next_ping:
                next_ping = now + self._ping_interval
                # A send can wait on drain when the peer stopped reading; bound it by the
                # deadline. A failed send is left to the silence rule above.
                with contextlib.suppress(TimeoutError, *_SEND_ERRORS):
                    async with asyncio.timeout_at(deadline):
                        await ws.send_str("ping")
                continue
            await asyncio.sleep(min(next_ping, deadline) - now)

    async def _sync(self, ws: aiohttp.ClientWebSocketResponse, keys: list[BindingKey]) -> None:
        """Bind everything after a (re)connect, then report CONNECTED."""
        await self._bind(ws, keys)
        if self._ws is ws and not self._closing:
            self._set_state(ConnectionState.CONNECTED, None)

    async def _bind(self, ws: aiohttp.ClientWebSocketResponse, keys: list[BindingKey]) -> None:
        """Bind `keys`; those without a reply in time are refreshed later on this socket."""
        if unanswered := await self._request_many(ws, "bind", keys):
            self._request_refresh(ws, unanswered)

    def _request_refresh(
        self, ws: aiohttp.ClientWebSocketResponse, keys: Iterable[BindingKey]
    ) -> None:
        """Have `keys` refreshed on this socket (see `_refresh_loop`)."""
        if self._ws is not ws or self._closing:
            return
        self._refresh_keys.update(keys)
        if self._refresh_task is None:
            self._refresh_task = self._spawn(self._refresh_loop(ws), "placeos-refresh")

    async def _refresh_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Bind again, on the open socket, what got no reply in time, until it gets one.

        A bind without a reply in time may never have been processed, or its initial notify
        may come late, after changes it is older than. Either would leave a wrong value for as
        long as the socket lives. Attempts back off like reconnects (starting at one
        request_timeout), and wait longer for replies each time (up to 8 request_timeouts),
        so a server that is merely slow is eventually answered in time.
        """
        attempt = 0
        try:
            while True:
                attempt += 1
                await asyncio.sleep(
                    backoff_delay(
                        attempt,
                        self._request_timeout,
                        max(self._request_timeout, self._backoff_max),
                    )
                )
                keys = [key for key in self._refresh_keys if key in self._bindings]
                self._refresh_keys.clear()
                if not keys:
                    return
                reply_timeout = self._request_timeout * 2 ** min(attempt - 1, 3)
                again = await self._refresh(ws, keys, reply_timeout)
                self._refresh_keys.update(again)
                if not again:
                    attempt = 0
        finally:
            if self._refresh_task is asyncio.current_task():
                self._refresh_task = None

    async def _refresh(
        self, ws: aiohttp.ClientWebSocketResponse, keys: list[BindingKey], reply_timeout: float
    ) -> list[BindingKey]:
        """Unbind, then bind `keys` again; return those to try once more.

        The unbind comes first because the server sends no second initial notify for a status
        already bound. Once it confirmed the unbind, anything still arriving from the old
        binding is a leftover: those notifies are dropped (by request id), and the value is
        unknown (None) until the new bind's initial notify (a status without a value sends
        none). An unconfirmed unbind may still have happened, so the bind is sent all the
        same, but the key is tried again.
        """
        self._bind_refreshes += len(keys)
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug(
                "Refreshing %d PlaceOS bindings whose bind got no reply in time: %s",
                len(keys),
                ", ".join(key.label for key in keys[:10]),
            )
        unconfirmed = set(await self._request_many(ws, "unbind", keys, reply_timeout))
        confirmed = [key for key in keys if key not in unconfirmed and key in self._bindings]
        if confirmed:
            # Every bind sent from here on has a larger id than this marker.
            marker = self._next_id()
            for key in confirmed:
                binding = self._bindings[key]
                binding.superseded_below = marker
                try:
                    binding.callback(binding.key, None)
                except Exception as err:
                    self._callback_error(binding, err)
        registered = [key for key in keys if key in self._bindings]
        unanswered = await self._request_many(ws, "bind", registered, reply_timeout)
        return [*unconfirmed.intersection(registered), *unanswered]

    async def _request_many(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        cmd: str,
        keys: list[BindingKey],
        reply_timeout: float | None = None,
    ) -> list[BindingKey]:
        """Send a bind or unbind for every key at once, then await all replies together.

        Returns the keys still registered whose request got no reply within `reply_timeout`
        (default: request_timeout).
        """
        if not keys:
            return []
        loop = asyncio.get_running_loop()
        requests: dict[asyncio.Future[dict[str, Any]], BindingKey] = {}
        request_ids: list[int] = []
        try:
            try:
                for key in keys:
                    request_id = self._next_id()
                    future: asyncio.Future[dict[str, Any]] = loop.create_future()
                    self._pending[request_id] = future
                    request_ids.append(request_id)
                    requests[future] = key
                    await ws.send_str(
                        _json_dumps(
                            {
                                "id": request_id,
                                "cmd": cmd,
                                "sys": key.sys,
                                "mod": key.mod,
                                "index": key.index,
                                "name": key.name,
                            }
                        )
                    )
            except _SEND_ERRORS:
                return []  # the socket is going down; the next connection binds again
            wait_for = self._request_timeout if reply_timeout is None else reply_timeout
            _done, not_done = await asyncio.wait(requests, timeout=wait_for)
        finally:
            for request_id in request_ids:
                self._pending.pop(request_id, None)
            for future in requests:
                _retrieved(future)
        if not_done:
            self._requests_timed_out += len(not_done)
            if _LOGGER.isEnabledFor(logging.DEBUG):
                _LOGGER.debug(
                    "No reply to %s within %g s for %s",
                    cmd,
                    wait_for,
                    ", ".join(key.label for future, key in requests.items() if future in not_done),
                )
        unanswered: list[BindingKey] = []
        for future, key in requests.items():
            if future in not_done:
                if key in self._bindings:
                    unanswered.append(key)
                continue
            if (error := future.exception()) is None:
                continue
            binding = self._bindings.get(key)
            if cmd == "bind" and binding is not None and not binding.bind_error_logged:
                binding.bind_error_logged = True
                _LOGGER.warning("PlaceOS refused to bind %s on %s: %s", key.label, key.sys, error)
            elif _LOGGER.isEnabledFor(logging.DEBUG):
                _LOGGER.debug("%s of %s on %s failed: %s", cmd, key.label, key.sys, error)
        return unanswered

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._conn_tasks.add(task)
        task.add_done_callback(self._conn_tasks.discard)
        return task

    def _fail_pending(self, error: PlaceOSError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
                _retrieved(future)

    def _set_state(self, state: ConnectionState, reason: BaseException | None) -> None:
        if state is self._state or self._state is ConnectionState.CLOSED:
            return
        self._state = state
        for waiter in self._state_waiters:
            if not waiter.done():
                waiter.set_result(None)
        for listener in list(self._state_listeners):
            try:
                listener(state, reason)
            except Exception:
                _LOGGER.exception("PlaceOS state listener %r failed", listener)

    # ------------------------------------------------------------------ reading

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> PlaceOSError:
        """Read frames until the socket closes; return why it closed."""
        receive = ws.receive
        on_text = self._on_text
        clock = asyncio.get_running_loop().time
        while True:
            msg = await receive()
            self._last_rx = clock()
            kind = msg.type
            if kind is _WS_TEXT:
                on_text(msg.data)
            elif kind is _WS_BINARY:
                self._ignore("binary", msg.data)
            elif kind is _WS_ERROR:
                return PlaceOSConnectionError(f"WebSocket error: {msg.data}")
            else:  # CLOSE, CLOSING, CLOSED
                return PlaceOSConnectionError(
                    f"the socket was closed (code {ws.close_code})"
                    if ws.close_code is not None
                    else "the socket was closed"
                )

    def _on_text(self, data: str) -> None:
        """Handle one text frame: the hot path of every notify.

        A notify whose value `fast_loads` (orjson) decodes exactly as `json.loads` would is
        routed at once. Anything else (replies, floats that may have been integers beyond 64
        bits, lists and objects in a frame with a 19-digit run, texts orjson rejects) is decoded
        by `json.loads`, so every frame gets the standard library's result.
        """
        try:
            frame = _fast_loads(data)
        except (ValueError, RecursionError):
            pass
        else:
            if type(frame) is dict and frame.get("type") == "notify":
                value: Any = frame.get("value")
                value_type = type(value)
                meta = frame.get("meta")
                # The fields read from a notify (value, meta.index, id) must not be floats
                # that could have been integers beyond 64 bits.
                if (
                    (
                        value_type in _FAST_EXACT_TYPES
                        or (value_type is float and -FAST_FLOAT_EXACT < value < FAST_FLOAT_EXACT)
                        or (
                            value_type in _FAST_STRUCTURED_TYPES
                            and _MAYBE_BIG_INTEGER(data) is None
                        )
                    )
                    and type(meta) is dict
                    and type(index := meta.get("index")) is int
                    and type(frame.get("id")) is not float
                ):
                    try:
                        binding = self._bindings.get(
                            (meta.get("sys", ""), meta.get("mod", ""), index, meta.get("name", ""))
                        )
                    except TypeError:  # an unhashable field: malformed, see below
                        binding = None
                    if binding is not None:
                        self._deliver(binding, value, frame)
                        return
                # Unrouted or malformed notifies are counted by the exact path below.
        try:
            frame = _json_loads(data)
        except (ValueError, RecursionError):
            if data == "pong":  # reply to our ping, or the server's unsolicited one
                self._pongs += 1
            else:
                self._ignore("non-JSON", data)
            return
        if type(frame) is not dict:
            self._ignore("non-object", data)
            return
        kind = frame.get("type")
        if kind == "notify":
            self._on_notify(frame, data)
        elif kind in ("success", "error"):
            request_id = frame.get("id")
            future = self._pending.pop(request_id, None) if type(request_id) is int else None
            if future is None:
                self._replies_unmatched += 1
                if _LOGGER.isEnabledFor(logging.DEBUG):
                    _LOGGER.debug("Ignoring a reply with no pending request: %.200r", data)
            elif not future.done():
                if kind == "success":
                    future.set_result(frame)
                else:
                    future.set_exception(PlaceOSCommandError.from_frame(frame))
        else:
            self._ignore(f"{kind!r}-type", data)

    def _on_notify(self, frame: dict[str, Any], data: str) -> None:
        """Route a decoded notify by its `meta` to its binding's callback."""
        try:
            meta = frame["meta"]
            binding = self._bindings.get((meta["sys"], meta["mod"], meta["index"], meta["name"]))
        except (KeyError, TypeError):
            self._ignore("malformed notify", data)
            return
        if binding is None:
            # Unbound meanwhile, or a binding of another client on a shared server.
            self._notifies_unrouted += 1
            return
        self._deliver(binding, frame.get("value"), frame)  # the server omits null fields

    def _deliver(self, binding: _Binding, value: Any, frame: dict[str, Any]) -> None:
        """Pass a notify's (decoded) value to its binding's callback."""
        if binding.superseded_below and _older_than(frame, binding.superseded_below):
            self._notifies_superseded += 1
            return
        self._notifies += 1
        if self._auto and type(value) is str:
            value = decode_auto(value)
        try:
            binding.callback(binding.key, value)
        except Exception as err:
            self._callback_error(binding, err)

    def _callback_error(self, binding: _Binding, err: Exception) -> None:
        self._callback_errors += 1
        if not binding.callback_error_logged:
            binding.callback_error_logged = True
            _LOGGER.error(
                "Callback for PlaceOS binding %s on %s failed; later failures of it are "
                "logged at debug level",
                binding.key.label,
                binding.key.sys,
                exc_info=err,
            )
        elif _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug("Callback for %s failed again", binding.key.label, exc_info=err)

    def _ignore(self, what: str, data: str | bytes) -> None:
        self._frames_ignored += 1
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug(
                "Ignoring a %s frame from PlaceOS (%d chars): %.*r",
                what,
                len(data),
                _LOG_FRAME_CHARS,
                data,
            )
