"""Data models of the PlaceOS client."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
import re
from typing import Any, Final, NamedTuple

from yarl import URL

_MODULE_LABEL = re.compile(r"(.+)_([0-9]+)")


_HTTP_SCHEMES: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
CONTROL_PATH: Final = "/api/engine/v2/systems/control"


def normalize_url(url: str | URL) -> URL:
    """Return the instance's origin (`https://host[:port]`) from what a user typed.

    Credentials, path, query and fragment are dropped: PlaceOS serves its API from the site
    root. `ws://`/`wss://` are accepted as `http://`/`https://`. Raises ValueError for
    anything that is not an absolute http(s) URL with a host.
    """
    try:
        parsed = URL(url.strip()) if isinstance(url, str) else url
        scheme = _HTTP_SCHEMES.get(parsed.scheme.lower()) if parsed.absolute else None
        if scheme is None or not parsed.host:
            raise ValueError  # noqa: TRY301
        return parsed.origin().with_scheme(scheme)
    except ValueError:
        raise ValueError("the URL must look like https://placeos.example.com") from None


def websocket_url(url: str | URL) -> URL:
    """The control WebSocket's URL for an instance URL (http -> ws, https -> wss)."""
    origin = normalize_url(url)
    return origin.with_scheme("wss" if origin.scheme == "https" else "ws").with_path(CONTROL_PATH)


class BindingKey(NamedTuple):
    """One status variable: the tuple the server echoes in a reply's `meta`."""

    sys: str
    mod: str
    index: int  # type: ignore[assignment]  # shadows tuple.index(); the protocol's name
    name: str

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> BindingKey | None:
        """Build the key from a `meta` object; None when it is malformed."""
        try:
            sys, mod, index, name = meta["sys"], meta["mod"], meta["index"], meta["name"]
        except (KeyError, TypeError):
            return None
        if (
            type(sys) is not str
            or type(mod) is not str
            or type(index) is not int
            or type(name) is not str
        ):
            return None
        return cls(sys, mod, index, name)

    @property
    def module_label(self) -> str:
        """PlaceOS notation of the module, e.g. `Display_1`."""
        return f"{self.mod}_{self.index}"

    @property
    def label(self) -> str:
        """PlaceOS notation of the status, e.g. `Display_1.power`."""
        return f"{self.mod}_{self.index}.{self.name}"

    @classmethod
    def parse(cls, sys: str, label: str) -> BindingKey:
        """Parse `Display_2.power` (or `Display.power`, index 1) into a key.

        Raises ValueError when the system id, module, index or name is missing or invalid.
        """
        sys = sys.strip()
        if not sys:
            raise ValueError("system id is empty")
        module_part, dot, name = label.strip().partition(".")
        name = name.strip()
        if not dot or not name:
            raise ValueError(f"{label!r} is not of the form Module_1.status")
        module_part = module_part.strip()
        index = 1
        if match := _MODULE_LABEL.fullmatch(module_part):
            module_part, index = match[1], int(match[2])
        if not module_part or index < 1:
            raise ValueError(f"{label!r} is not of the form Module_1.status")
        return cls(sys, module_part, index, name)


NotifyCallback = Callable[[BindingKey, Any], None]
"""Called with the key and the decoded value of every notify; None means no value."""


class ConnectionState(StrEnum):
    """State of the WebSocket connection."""

    CONNECTING = "connecting"  # trying to open the socket (first time or after a loss)
    SYNCING = "syncing"  # socket open, binds sent, waiting for their replies
    CONNECTED = "connected"  # every bind answered (or timed out); values flowing
    DISCONNECTED = "disconnected"  # lost; the reconnect loop waits for its backoff
    AUTH_FAILED = "auth_failed"  # 401/403 on the handshake: the loop stopped
    CLOSED = "closed"  # close() was called


StateCallback = Callable[[ConnectionState, BaseException | None], None]
"""Called on every state transition with the exception that caused it, if any."""


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def _required_id(data: Mapping[str, Any], what: str) -> str:
    if not isinstance(data, Mapping):
        raise TypeError(f"{what} is not an object")
    value = data.get("id")
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} has no id")
    return value


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


@dataclass(frozen=True, slots=True)
class Authority:
    """Identity of a PlaceOS instance (`GET /auth/authority`)."""

    id: str
    name: str
    domain: str
    version: str
    description: str = ""
    production: bool | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Authority:
        """Build from the JSON object; raises ValueError without an id."""
        production = data.get("production") if isinstance(data, Mapping) else None
        return cls(
            id=_required_id(data, "authority"),
            name=_text(data, "name"),
            domain=_text(data, "domain"),
            version=_text(data, "version"),
            description=_text(data, "description"),
            production=production if isinstance(production, bool) else None,
        )

    @property
    def is_v2(self) -> bool:
        """True when `version` looks like x.y.z with x >= 2 (not the legacy ACAEngine)."""
        match = re.match(r"v?([0-9]+)\.[0-9]+\.[0-9]+", self.version)
        return match is not None and int(match[1]) >= 2


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """One module of a system (from `GET /systems/{id}?complete=true`).

    `binding_name` and `index` are what a bind uses: the custom name when set, else the
    name, numbered in the system's module order starting at 1.
    """

    id: str
    name: str
    custom_name: str
    driver_name: str
    binding_name: str
    index: int
    connected: bool | None = None
    running: bool | None = None

    @property
    def label(self) -> str:
        """PlaceOS notation, e.g. `Display_1`."""
        return f"{self.binding_name}_{self.index}"


@dataclass(frozen=True, slots=True)
class System:
    """A PlaceOS system (a room or a group of devices)."""

    id: str
    name: str
    display_name: str = ""
    description: str = ""
    zones: list[str] = field(default_factory=list)
    module_ids: list[str] = field(default_factory=list)
    modules: list[ModuleInfo] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The name to show a user: the display name when set, else the name."""
        return self.display_name or self.name or self.id

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> System:
        """Build from the JSON object; `module_data` (complete=true) fills `modules`."""
        system_id = _required_id(data, "system")
        module_ids = _str_list(data.get("modules"))
        module_data = data.get("module_data")
        modules: list[ModuleInfo] = []
        if isinstance(module_data, list):
            records = [item for item in module_data if isinstance(item, Mapping)]
            # Indexes follow the system's module order, which `modules` holds.
            position = {module_id: pos for pos, module_id in enumerate(module_ids)}
            records.sort(key=lambda item: position.get(str(item.get("id")), len(position)))
            counts: dict[str, int] = {}
            for record in records:
                module_id = record.get("id")
                if not isinstance(module_id, str):
                    continue
                driver = record.get("driver")
                driver = driver if isinstance(driver, Mapping) else {}
                name = _text(record, "name") or _text(driver, "module_name")
                custom_name = _text(record, "custom_name")
                binding_name = custom_name or name
                if not binding_name:
                    continue
                counts[binding_name] = counts.get(binding_name, 0) + 1
                connected = record.get("connected")
                running = record.get("running")
                modules.append(
                    ModuleInfo(
                        id=module_id,
                        name=name,
                        custom_name=custom_name,
                        driver_name=_text(driver, "name"),
                        binding_name=binding_name,
                        index=counts[binding_name],
                        connected=connected if isinstance(connected, bool) else None,
                        running=running if isinstance(running, bool) else None,
                    )
                )
        return cls(
            id=system_id,
            name=_text(data, "name"),
            display_name=_text(data, "display_name"),
            description=_text(data, "description"),
            zones=_str_list(data.get("zones")),
            module_ids=module_ids,
            modules=modules,
        )


@dataclass(frozen=True, slots=True)
class Zone:
    """A PlaceOS zone (building, level, area, …)."""

    id: str
    name: str
    display_name: str = ""
    description: str = ""
    tags: list[str] = field(default_factory=list)
    parent_id: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Zone:
        """Build from the JSON object; raises ValueError without an id."""
        parent_id = data.get("parent_id") if isinstance(data, Mapping) else None
        return cls(
            id=_required_id(data, "zone"),
            name=_text(data, "name"),
            display_name=_text(data, "display_name"),
            description=_text(data, "description"),
            tags=_str_list(data.get("tags")),
            parent_id=parent_id if isinstance(parent_id, str) and parent_id else None,
        )
