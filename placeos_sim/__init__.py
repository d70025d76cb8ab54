"""PlaceOS server simulator (aiohttp) for tests, benchmarks and demos.

It behaves like the real PlaceOS ``rest-api`` (see ``placeos-protocol.md`` §1-6): the control
WebSocket ``/api/engine/v2/systems/control`` and the discovery REST API, both served from one
:class:`Scenario` (``Scenario.demo()`` by default: three rooms in a small building).
Run it on its own with ``python -m placeos_sim --help``.

Quick start::

    sim = PlaceOSSimulator()                     # demo building, API key "test-key"
    url = await sim.start()                      # "http://127.0.0.1:PORT"; sim.port, sim.ws_url
    ...
    await sim.stop()                             # listener gone, sockets aborted, tasks ended
    await sim.start(port=sim.port)               # restart on the same port

Constructor: ``PlaceOSSimulator(scenario=None, api_keys=("test-key",), *, admin_keys=(),
value_encoding="raw", notify_before_success=False, unsolicited_pong_interval=None,
ssl_context=None, enforce_domain=False)``. ``value_encoding="string"`` sends values as
stringified JSON like the seed document / pre-2021 servers; ``enforce_domain`` answers 401
``authority not found`` unless the Host header matches ``scenario.authority["domain"]``.

Control API (call from the simulator's event loop)
--------------------------------------------------

Statuses — each returns a :class:`Delivery`; ``await`` it to wait until the frames were written
to the sockets (optional):

- ``set_status(sys, mod, index, name, value, *, force=False)``: store and notify bound sockets
  (only when the value changed, unless ``force``). ``None`` deletes. Creates an unknown
  system/module, so a bind to something that "appears later" starts receiving values.
- ``delete_status(sys, mod, index, name)``: bound sockets get ``"value": null``.
- ``get_status(sys, mod, index, name, default=None)``.
- ``burst(sys, mod, index, name, values)``: one notify per value, in order, no change detection;
  each value is encoded once. Meant for benchmarks (100k+ notifies).
- ``set_method(sys, mod, index, name, handler, *, privileged=False)``: ``handler(*args)`` sync or
  async; its return value is the exec result. Raise ``DriverError(msg, code)`` for error 3,
  ``UnexpectedFailure(msg)`` for error 7; any other exception is error 3 with code 500. A
  ``MethodSpec`` gives declarative behaviour; ``None`` removes the method.
- ``emit_debug(module_id, message, level="info")``: ``debug`` frame to sockets that sent
  ``debug`` for that module id (an exec on it also emits one).
- ``activity_tick()`` / ``start_activity(interval, seed=None)`` / ``stop_activity()``: occupancy
  sensors (``people_count``/``presence``) wander; ``stop()`` ends the activity.

Fault switches (attributes unless noted):

- ``answer_ping`` (True): answer text ``ping`` with ``pong``.
- ``silent`` (False): send nothing at all (replies, notifies, pongs) while the socket stays
  open — a half-open connection as the client sees it.
- ``reply_delay`` (0.0 s), ``drop_replies`` (False), ``drop_next_replies(n)``,
  ``out_of_order`` (False; replies within ``out_of_order_window`` s are sent reversed): apply
  to the success/error replies to requests (a bind's initial notify travels with its reply but
  is never dropped).
- ``notify_before_success`` (constructor/attribute): the bind's initial notify comes first.
- ``reject_next_handshakes(n, status=401)``: the next ``n`` handshakes get 401 (JSON body) or
  403 (empty body).
- ``drop_connections()``: abort every TCP connection without a close frame; returns a
  :class:`Dropped` (``.count``; ``await`` it to wait until the server has cleaned up).
- ``inject_frame(data, *, text=None)``: ``str`` → TEXT frame, ``bytes`` → BINARY frame,
  ``bytes`` with ``text=True`` → TEXT frame with those exact bytes (e.g. invalid UTF-8).
- Keys: ``add_key(key, admin=False, scopes_ok=True)`` (``scopes_ok=False`` → 403),
  ``revoke_key(key)`` (open sockets stay open, as on the real server), ``keys`` dict. Admin
  keys may bind ``_`` modules and call privileged methods.
- ``value_encoding`` (``raw``/``string``) can be switched at run time.

Observation:

- Counters: ``connections`` (open now), ``total_connections``, ``handshakes_rejected``,
  ``frames_received``, ``frames_ignored`` (malformed requests and binary frames),
  ``bind_requests``, ``unbind_requests``, ``exec_requests``, ``debug_requests``,
  ``replies_dropped``, ``rest_requests``; ``requests`` (deque of the last 1000 parsed
  :class:`Request`); ``bound_keys()``; ``subscribers(sys, mod, index, name)``.
- ``await wait_connections(n, timeout=5.0)``: until at least ``n`` sockets are open.
- ``await wait_for(predicate, timeout=5.0)``: until ``predicate()`` is true (re-checked on every
  connection change and received frame); ``TimeoutError`` otherwise.

TLS: ``placeos_sim.tls.self_signed_ssl_context()`` gives a server context valid for 127.0.0.1
and localhost; ``generate_certificate().client_ssl_context()`` a client that trusts it.
"""

from __future__ import annotations

from .scenario import (
    DriverError,
    MethodHandler,
    MethodSpec,
    Module,
    Scenario,
    System,
    UnexpectedFailure,
    Zone,
)
from .server import (
    CONTROL_PATH,
    ApiKey,
    BindingKey,
    Delivery,
    Dropped,
    PlaceOSSimulator,
    Request,
    parse_request,
)

__all__ = [
    "CONTROL_PATH",
    "ApiKey",
    "BindingKey",
    "Delivery",
    "DriverError",
    "Dropped",
    "MethodHandler",
    "MethodSpec",
    "Module",
    "PlaceOSSimulator",
    "Request",
    "Scenario",
    "System",
    "UnexpectedFailure",
    "Zone",
    "parse_request",
]
