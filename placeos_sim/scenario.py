"""Scenario data for the PlaceOS simulator: authority, zones, systems, modules, statuses, methods.

A scenario is plain data and can be loaded from JSON (``Scenario.from_file`` /
``Scenario.from_dict``) or built in code (``Scenario.demo()`` is the built-in demo building).
``Scenario.to_dict()`` gives the same structure back (Python handlers are not serialisable).

JSON format (every key except ``systems[].id`` / ``modules[].name`` is optional)::

    {
      "authority": {"id": "authority-demo", "name": "Demo Building", "description": "",
                    "domain": "localhost", "version": "3.12.0"},
      "user": {"id": "user-demo", "name": "Demo API user", "email": "api@example.com"},
      "zones": [
        {"id": "zone-bld1", "name": "Building 1", "description": "", "tags": ["building"],
         "parent_id": null}
      ],
      "systems": [
        {"id": "sys-room101", "name": "Room 1.01 Boardroom", "display_name": "Boardroom",
         "description": "", "zones": ["zone-bld1"], "capacity": 12,
         "modules": [
           {"id": "mod-disp1", "name": "Display", "custom_name": "",
            "driver": {"name": "Samsung MD Series", "module_name": "Display"},
            "connected": true, "running": true,
            "status": {"power": false, "volume": 30, "input": "hdmi"},
            "methods": {
              "power": {"params": {"state": "Bool"}, "sets": "power"},
              "volume": {"params": {"level": ["Int32", 50]}, "sets": "volume"},
              "reboot": {"privileged": true, "returns": "rebooting"},
              "broken": {"raises": "device offline", "code": 503},
              "slow": {"delay": 0.5, "returns": 42}
            }}
         ]}
      ]
    }

Semantics:

- A module's *binding name* is ``custom_name`` when non-empty, else ``name``; indexes number the
  modules of the same binding name in the system's module order, starting at 1. So two modules
  named ``Display`` are ``Display_1`` and ``Display_2``.
- ``status`` holds the current status values (any JSON). A status absent from the dict (or set
  to ``null``) has no value.
- ``methods`` describe what ``exec`` does, checked in this order: ``privileged`` (needs an admin
  key, else error 2), ``delay`` (seconds to wait), ``raises`` (driver raises: error 3 with
  ``code``, default 500), ``sets`` (stores the first argument into that status, which notifies
  bound sockets), then returns ``returns`` if given, else the value that was set, else null.
  ``params`` maps parameter names to a type name or ``[type, default]``; it feeds the
  ``functions`` REST endpoint. In code a ``MethodSpec.handler`` (sync or async callable taking the
  positional exec arguments) replaces the declarative behaviour.
- A module with ``running: false`` answers every exec with error 7 (module stopped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
import copy
from dataclasses import dataclass, field
import json
from pathlib import Path
import time
from typing import Any, Final

MethodHandler = Callable[..., Any]
"""Called with the exec's positional arguments; may return an awaitable. Raise
:class:`DriverError` for error 3 with a code, :class:`UnexpectedFailure` for error 7; any other
exception is reported as error 3 (``module raised: <message>``, code 500)."""


class _Unset:
    """Marker for 'no value given' where ``None`` is a legitimate value."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


class DriverError(Exception):
    """Raised by a method handler: the driver failed (exec error 3, ``code`` = the driver's)."""

    def __init__(self, message: str, code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UnexpectedFailure(Exception):
    """Raised by a method handler: core unreachable or similar (exec error 7)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class MethodSpec:
    """What ``exec`` of one method does (see the module docstring)."""

    params: dict[str, list[Any]] = field(default_factory=dict)
    sets: str | None = None
    returns: Any = UNSET
    raises: str | None = None
    code: int = 500
    privileged: bool = False
    delay: float = 0.0
    handler: MethodHandler | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MethodSpec:
        """Build from the JSON form."""
        raw_params = data.get("params") or {}
        if isinstance(raw_params, list):  # a bare list of names: untyped parameters
            raw_params = {str(name): "JSON::Any" for name in raw_params}
        params = {
            str(name): list(spec) if isinstance(spec, list) else [str(spec)]
            for name, spec in raw_params.items()
        }
        return cls(
            params=params,
            sets=data.get("sets"),
            returns=data.get("returns", UNSET),
            raises=data.get("raises"),
            code=int(data.get("code", 500)),
            privileged=bool(data.get("privileged", False)),
            delay=float(data.get("delay", 0.0)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the handler, if any, is not included)."""
        out: dict[str, Any] = {"params": {k: list(v) for k, v in self.params.items()}}
        if self.sets is not None:
            out["sets"] = self.sets
        if self.returns is not UNSET:
            out["returns"] = self.returns
        if self.raises is not None:
            out["raises"] = self.raises
            out["code"] = self.code
        if self.privileged:
            out["privileged"] = True
        if self.delay:
            out["delay"] = self.delay
        return out

    def describe(self) -> dict[str, Any]:
        """The entry of the ``functions`` REST endpoint."""
        return {
            "arity": len(self.params),
            "params": {k: list(v) for k, v in self.params.items()},
            "order": list(self.params),
        }


@dataclass
class Module:
    """One driver module instance inside a system."""

    id: str
    name: str
    custom_name: str = ""
    driver_name: str = ""
    driver_module_name: str = ""
    connected: bool = True
    running: bool = True
    status: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, MethodSpec] = field(default_factory=dict)

    @property
    def binding_name(self) -> str:
        """The name clients use: ``custom_name`` when non-empty, else ``name``."""
        return self.custom_name or self.name

    @property
    def protected(self) -> bool:
        """Modules whose binding name starts with ``_`` need an admin/support key to bind."""
        return self.binding_name.startswith("_")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Module:
        """Build from the JSON form."""
        driver = data.get("driver") or {}
        name = str(data["name"])
        return cls(
            id=str(data.get("id") or f"mod-{name}"),
            name=name,
            custom_name=str(data.get("custom_name") or ""),
            driver_name=str(driver.get("name") or ""),
            driver_module_name=str(driver.get("module_name") or ""),
            connected=bool(data.get("connected", True)),
            running=bool(data.get("running", True)),
            status={k: v for k, v in (data.get("status") or {}).items() if v is not None},
            methods={
                str(k): MethodSpec.from_dict(v) for k, v in (data.get("methods") or {}).items()
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "id": self.id,
            "name": self.name,
            "custom_name": self.custom_name,
            "driver": {"name": self.driver_name, "module_name": self.driver_module_name},
            "connected": self.connected,
            "running": self.running,
            "status": copy.deepcopy(self.status),
            "methods": {k: v.to_dict() for k, v in self.methods.items()},
        }

    def module_data(self, sys_id: str) -> dict[str, Any]:
        """The ``module_data`` entry of ``GET /systems/{sys}?complete=true``."""
        driver_id = f"driver-{self.id.removeprefix('mod-')}"
        return {
            "id": self.id,
            "name": self.name,
            "custom_name": self.custom_name or None,
            "control_system_id": sys_id,
            "driver_id": driver_id,
            "driver": {
                "id": driver_id,
                "name": self.driver_name or self.name,
                "module_name": self.driver_module_name or self.name,
                "role": "logic",
            },
            "connected": self.connected,
            "running": self.running,
            "role": "logic",
            "notes": "",
        }


@dataclass
class System:
    """A PlaceOS system (usually a room) with its modules in order."""

    id: str
    name: str
    display_name: str = ""
    description: str = ""
    zones: list[str] = field(default_factory=list)
    capacity: int = 0
    email: str = ""
    modules: list[Module] = field(default_factory=list)
    _index: dict[tuple[str, int], Module] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _indexed_count: int = field(default=-1, init=False, repr=False, compare=False)

    def resolve(self, mod: str, index: int) -> Module | None:
        """The module a client means by ``mod`` / ``index`` (binding name and 1-based index)."""
        if self._indexed_count != len(self.modules):
            self.reindex()
        return self._index.get((mod, index))

    def reindex(self) -> None:
        """Rebuild the (binding name, index) table. Adding or removing modules is noticed by
        itself; call this after renaming or reordering modules in place."""
        counts: dict[str, int] = {}
        table: dict[tuple[str, int], Module] = {}
        for module in self.modules:
            binding = module.binding_name
            counts[binding] = counts.get(binding, 0) + 1
            table[(binding, counts[binding])] = module
        self._index = table
        self._indexed_count = len(self.modules)

    def types(self) -> dict[str, int]:
        """Module binding name -> number of modules with that name (valid indexes 1..n)."""
        counts: dict[str, int] = {}
        for module in self.modules:
            counts[module.binding_name] = counts.get(module.binding_name, 0) + 1
        return counts

    def to_api(self) -> dict[str, Any]:
        """The system record of the REST API."""
        return {
            "id": self.id,
            "name": self.name,
            "display_name": self.display_name or None,
            "description": self.description,
            "email": self.email or None,
            "capacity": self.capacity,
            "features": [],
            "bookable": bool(self.email),
            "public": False,
            "zones": list(self.zones),
            "modules": [module.id for module in self.modules],
            "support_url": "",
            "timezone": None,
            "version": 1,
            "created_at": 1_700_000_000,
            "updated_at": 1_700_000_000,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> System:
        """Build from the JSON form."""
        return cls(
            id=str(data["id"]),
            name=str(data.get("name") or data["id"]),
            display_name=str(data.get("display_name") or ""),
            description=str(data.get("description") or ""),
            zones=[str(z) for z in data.get("zones") or []],
            capacity=int(data.get("capacity") or 0),
            email=str(data.get("email") or ""),
            modules=[Module.from_dict(m) for m in data.get("modules") or []],
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "id": self.id,
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "zones": list(self.zones),
            "capacity": self.capacity,
            "email": self.email,
            "modules": [m.to_dict() for m in self.modules],
        }


@dataclass
class Zone:
    """A PlaceOS zone (organisation, building, level, …)."""

    id: str
    name: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    parent_id: str | None = None

    def to_api(self) -> dict[str, Any]:
        """The zone record of the REST API."""
        return {
            "id": self.id,
            "name": self.name,
            "display_name": None,
            "description": self.description,
            "tags": list(self.tags),
            "parent_id": self.parent_id,
            "created_at": 1_700_000_000,
            "updated_at": 1_700_000_000,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Zone:
        """Build from the JSON form."""
        return cls(
            id=str(data["id"]),
            name=str(data.get("name") or data["id"]),
            description=str(data.get("description") or ""),
            tags=[str(t) for t in data.get("tags") or []],
            parent_id=data.get("parent_id"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "tags": list(self.tags),
            "parent_id": self.parent_id,
        }


DEFAULT_AUTHORITY: Final[dict[str, Any]] = {
    "id": "authority-sim",
    "name": "PlaceOS Simulator",
    "description": "",
    "domain": "localhost",
    "version": "3.12.0",
}
DEFAULT_USER: Final[dict[str, Any]] = {
    "id": "user-sim",
    "name": "Simulator API user",
    "email": "api-user@example.com",
}


@dataclass
class Scenario:
    """Everything the simulator serves."""

    systems: list[System] = field(default_factory=list)
    zones: list[Zone] = field(default_factory=list)
    authority: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_AUTHORITY))
    user: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_USER))
    _by_id: dict[str, System] = field(default_factory=dict, init=False, repr=False, compare=False)
    _indexed_count: int = field(default=-1, init=False, repr=False, compare=False)

    def system(self, sys_id: str) -> System | None:
        """The system with this id, if any (the first one if ids repeat)."""
        if self._indexed_count != len(self.systems):
            self.reindex()
        found = self._by_id.get(sys_id)
        if found is not None and found.id != sys_id:  # an id was changed in place
            self.reindex()
            found = self._by_id.get(sys_id)
        return found

    def reindex(self) -> None:
        """Rebuild the id table. Adding or removing systems is noticed by itself; call this
        after replacing a system in ``systems`` with another one."""
        table: dict[str, System] = {}
        for system in self.systems:
            table.setdefault(system.id, system)
        self._by_id = table
        self._indexed_count = len(self.systems)

    def module(self, sys_id: str, mod: str, index: int) -> Module | None:
        """The module at (sys, binding name, index), if any."""
        system = self.system(sys_id)
        return system.resolve(mod, index) if system is not None else None

    def module_by_id(self, module_id: str) -> tuple[System, Module] | None:
        """Find a module by its ``mod-…`` id."""
        for system in self.systems:
            for module in system.modules:
                if module.id == module_id:
                    return system, module
        return None

    def iter_modules(self) -> Iterator[tuple[System, Module]]:
        """Every (system, module) pair."""
        for system in self.systems:
            for module in system.modules:
                yield system, module

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Build from the JSON structure described in the module docstring."""
        authority = dict(DEFAULT_AUTHORITY)
        authority.update(data.get("authority") or {})
        user = dict(DEFAULT_USER)
        user.update(data.get("user") or {})
        return cls(
            systems=[System.from_dict(s) for s in data.get("systems") or []],
            zones=[Zone.from_dict(z) for z in data.get("zones") or []],
            authority=authority,
            user=user,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        """Load a JSON scenario file."""
        with Path(path).open(encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    def to_dict(self) -> dict[str, Any]:
        """The JSON structure (``from_dict(to_dict())`` gives an equal scenario)."""
        return {
            "authority": dict(self.authority),
            "user": dict(self.user),
            "zones": [z.to_dict() for z in self.zones],
            "systems": [s.to_dict() for s in self.systems],
        }

    @classmethod
    def demo(cls, now: float | None = None) -> Scenario:
        """The built-in demo building (bookings are placed around ``now``)."""
        return cls.from_dict(demo_data(now))


def _setter(status: str, type_name: str, param: str) -> dict[str, Any]:
    return {"params": {param: type_name}, "sets": status}


def _display(mod_id: str, *, power: bool, volume: int, source: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": mod_id,
        "name": "Display",
        "driver": {"name": "Samsung MD, DB & DM Series LCD", "module_name": "Display"},
        "status": {"power": power, "volume": volume, "input": source, "mute": False},
        "methods": {
            "power": _setter("power", "Bool", "state"),
            "volume": _setter("volume", "Int32", "level"),
            "input": _setter("input", "String", "name"),
            "mute": _setter("mute", "Bool", "state"),
        },
        **extra,
    }


def _lighting(mod_id: str, *, level: int, scene: str) -> dict[str, Any]:
    return {
        "id": mod_id,
        "name": "Lighting",
        "driver": {"name": "Dynalite Lighting", "module_name": "Lighting"},
        "status": {"level": level, "scene": scene},
        "methods": {
            "scene": _setter("scene", "String", "name"),
            "level": _setter("level", "Int32", "value"),
        },
    }


def _occupancy(mod_id: str, *, people: int) -> dict[str, Any]:
    return {
        "id": mod_id,
        "name": "Occupancy",
        "driver": {"name": "People Counter", "module_name": "Occupancy"},
        "status": {"presence": people > 0, "people_count": people},
        "methods": {},
    }


def _bookings(mod_id: str, bookings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": mod_id,
        "name": "Bookings",
        "driver": {"name": "Calendar Bookings", "module_name": "Bookings"},
        "status": {"bookings": bookings, "in_use": False},
        "methods": {"refresh": {"returns": len(bookings)}},
    }


def demo_data(now: float | None = None) -> dict[str, Any]:
    """The demo building as a JSON-compatible dict (see ``Scenario.demo``)."""
    hour = 3600
    start = int((now if now is not None else time.time()) // hour * hour)

    def booking(ident: str, title: str, offset_h: int, hours: int, host: str) -> dict[str, Any]:
        return {
            "id": ident,
            "title": title,
            "event_start": start + offset_h * hour,
            "event_end": start + (offset_h + hours) * hour,
            "host": host,
            "attendees": [host],
        }

    return {
        "authority": {
            "id": "authority-demo0001",
            "name": "Demo Building",
            "description": "PlaceOS simulator demo building",
            "domain": "localhost",
            "version": "3.12.0",
        },
        "user": {"id": "user-demo0001", "name": "Demo API user", "email": "api@example.com"},
        "zones": [
            {"id": "zone-org0001", "name": "Example Org", "tags": ["org"]},
            {
                "id": "zone-bld0001",
                "name": "Building 1",
                "tags": ["building"],
                "parent_id": "zone-org0001",
            },
            {
                "id": "zone-lvl0001",
                "name": "Level 1",
                "tags": ["level"],
                "parent_id": "zone-bld0001",
            },
        ],
        "systems": [
            {
                "id": "sys-room101",
                "name": "Room 1.01 Boardroom",
                "display_name": "Boardroom",
                "description": "Twelve-seat boardroom with two displays",
                "zones": ["zone-org0001", "zone-bld0001", "zone-lvl0001"],
                "capacity": 12,
                "email": "room101@example.com",
                "modules": [
                    _display("mod-disp0101", power=True, volume=30, source="hdmi"),
                    # A second display under a custom name: binding "Display", index 2.
                    _display(
                        "mod-disp0102",
                        power=False,
                        volume=20,
                        source="hdmi2",
                        name="Samsung Display",
                        custom_name="Display",
                    ),
                    _lighting("mod-lght0101", level=70, scene="meeting"),
                    _bookings(
                        "mod-bkgs0101",
                        [
                            booking("evt-1", "Board meeting", 0, 1, "ceo@example.com"),
                            booking("evt-2", "Budget review", 2, 1, "cfo@example.com"),
                        ],
                    ),
                    _occupancy("mod-occu0101", people=4),
                    {
                        "id": "mod-admn0101",
                        "name": "_Admin",
                        "driver": {"name": "Room Admin", "module_name": "_Admin"},
                        "status": {"debug_mode": False, "firmware": "1.4.2"},
                        "methods": {
                            "restart": {"privileged": True, "returns": "restarting"},
                            "set_debug": {
                                "params": {"enabled": "Bool"},
                                "sets": "debug_mode",
                                "privileged": True,
                            },
                        },
                    },
                ],
            },
            {
                "id": "sys-room102",
                "name": "Room 1.02 Huddle",
                "display_name": "Huddle",
                "description": "Four-seat huddle room",
                "zones": ["zone-org0001", "zone-bld0001", "zone-lvl0001"],
                "capacity": 4,
                "email": "room102@example.com",
                "modules": [
                    _display("mod-disp0201", power=False, volume=15, source="usb"),
                    _bookings("mod-bkgs0201", [booking("evt-3", "1:1", 1, 1, "ann@example.com")]),
                    _occupancy("mod-occu0201", people=0),
                ],
            },
            {
                "id": "sys-lobby1",
                "name": "Level 1 Lobby",
                "display_name": "Lobby",
                "description": "Entrance lobby with signage lighting",
                "zones": ["zone-org0001", "zone-bld0001", "zone-lvl0001"],
                "capacity": 0,
                "modules": [
                    _lighting("mod-lght0301", level=100, scene="day"),
                    _occupancy("mod-occu0301", people=2),
                ],
            },
        ],
    }
