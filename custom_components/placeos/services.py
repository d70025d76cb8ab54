"""The `placeos.exec` action: call a method of a PlaceOS module and return its result.

Fields: `sys`, `mod`, `index` (default 1), `name`, `args` (default `[]`), optional
`config_entry_id` (needed only when several PlaceOS entries are loaded) and `timeout` (seconds,
default: the entry's `exec_timeout` option). `args` is the list of positional arguments; a
single value that is not a list is wrapped (`args: 30` sends `[30]`; to pass one list argument,
nest it: `args: [[1, 2]]`), and `null` means no arguments. Returns `{"value": <result>}`.

The data is validated by a strict schema (unknown keys are rejected, so nothing can be smuggled
into the protocol request); invalid data, an unknown or unloaded entry, and a missing
`config_entry_id` with several entries loaded raise a translated `ServiceValidationError`.
PlaceOS errors, timeouts and a lost connection raise a translated `HomeAssistantError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import wraps
from typing import TYPE_CHECKING, Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
import voluptuous as vol

from .client import (
    ErrorCode,
    PlaceOSCommandError,
    PlaceOSError,
    PlaceOSNotConnectedError,
    PlaceOSTimeoutError,
)
from .const import (
    ATTR_ARGS,
    ATTR_CONFIG_ENTRY_ID,
    ATTR_INDEX,
    ATTR_MOD,
    ATTR_NAME,
    ATTR_SYS,
    ATTR_TIMEOUT,
    ATTR_VALUE,
    CONF_EXEC_TIMEOUT,
    DEFAULT_EXEC_TIMEOUT,
    DOMAIN,
    MAX_EXEC_TIMEOUT,
    MIN_EXEC_CALL_TIMEOUT,
    SERVICE_EXEC,
)

if TYPE_CHECKING:
    from .hub import PlaceOSHub

# The server parses `index` as a 32-bit integer and ignores a request it cannot parse.
_MAX_INDEX = 2**31 - 1
# Extra time the action allows beyond the request timeout the client enforces itself.
_TIMEOUT_MARGIN = 5.0

_COMMAND_ERROR_KEYS: dict[int, str] = {
    ErrorCode.BAD_REQUEST: "function_not_found",
    ErrorCode.ACCESS_DENIED: "access_denied",
    ErrorCode.REQUEST_FAILED: "request_failed",
    ErrorCode.SYSTEM_NOT_FOUND: "module_not_found",
    ErrorCode.MODULE_NOT_FOUND: "module_not_found",
    ErrorCode.UNEXPECTED_FAILURE: "unexpected_failure",
}


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise vol.Invalid("expected a non-empty string")
    return value


def _index(value: Any) -> int:
    if isinstance(value, str):
        text = value.strip()
        # Short ASCII digits only: int() of a huge text is slow, or raises on some digits.
        value = int(text) if text.isascii() and text.isdecimal() and len(text) <= 10 else None
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    # `type` rather than isinstance: a bool is not an index.
    if type(value) is not int or not 1 <= value <= _MAX_INDEX:
        raise vol.Invalid(f"expected an integer from 1 to {_MAX_INDEX}")
    return value


def _args(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _timeout(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise vol.Invalid("expected a number of seconds") from None
    low, high = MIN_EXEC_CALL_TIMEOUT, MAX_EXEC_TIMEOUT
    if type(value) not in (int, float) or not low <= value <= high:
        raise vol.Invalid(f"expected seconds between {low:g} and {high:g}")
    return float(value)


EXEC_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_SYS): _text,
        vol.Required(ATTR_MOD): _text,
        vol.Optional(ATTR_INDEX, default=1): _index,
        vol.Required(ATTR_NAME): _text,
        vol.Optional(ATTR_ARGS, default=list): _args,
        vol.Optional(ATTR_CONFIG_ENTRY_ID): _text,
        vol.Optional(ATTR_TIMEOUT): _timeout,
    },
    extra=vol.PREVENT_EXTRA,
)


@dataclass(frozen=True, slots=True)
class ExecRequest:
    """A validated `placeos.exec` call."""

    sys: str
    mod: str
    index: int
    name: str
    args: list[Any]
    timeout: float

    @property
    def placeholders(self) -> dict[str, str]:
        """Translation placeholders naming the target."""
        return {
            "sys": self.sys,
            "module": f"{self.mod}_{self.index}",
            "method": self.name,
            "timeout": f"{self.timeout:g}",
        }


type _ExecFunc = Callable[[PlaceOSHub, ExecRequest], Awaitable[Any]]


def translate_errors(
    func: _ExecFunc,
) -> Callable[[PlaceOSHub, ExecRequest], Coroutine[Any, Any, Any]]:
    """Map client errors to translated `HomeAssistantError`s (as `webostv`'s `cmd` does)."""

    @wraps(func)
    async def wrapper(hub: PlaceOSHub, request: ExecRequest) -> Any:
        try:
            return await func(hub, request)
        except PlaceOSNotConnectedError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="not_connected",
                translation_placeholders={"host": hub.host},
            ) from err
        except (PlaceOSTimeoutError, TimeoutError) as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="exec_timeout",
                translation_placeholders=request.placeholders,
            ) from err
        except PlaceOSCommandError as err:
            key = "command_failed"
            if err.error_code is not None:
                key = _COMMAND_ERROR_KEYS.get(err.error_code, key)
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key=key,
                translation_placeholders={
                    **request.placeholders,
                    "error_code": str(err.error_code),
                    "message": err.message,
                },
            ) from err
        except PlaceOSError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="communication_error",
                translation_placeholders={"host": hub.host, "error": str(err)},
            ) from err

    return wrapper


@translate_errors
async def _async_exec(hub: PlaceOSHub, request: ExecRequest) -> Any:
    async with asyncio.timeout(request.timeout + _TIMEOUT_MARGIN):
        return await hub.client.exec(
            request.sys,
            request.mod,
            request.index,
            request.name,
            request.args,
            timeout=request.timeout,
        )


@callback
def _async_get_hub(hass: HomeAssistant, entry_id: str | None) -> PlaceOSHub:
    """Return the hub of the given entry, or of the only loaded entry."""
    if entry_id is None:
        loaded = hass.config_entries.async_loaded_entries(DOMAIN)
        if not loaded:
            raise ServiceValidationError(
                translation_domain=DOMAIN, translation_key="no_loaded_entries"
            )
        if len(loaded) > 1:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="multiple_entries",
                translation_placeholders={"entries": ", ".join(e.title for e in loaded)},
            )
        entry = loaded[0]
    else:
        found = hass.config_entries.async_get_entry(entry_id)
        if found is None or found.domain != DOMAIN:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="entry_not_found",
                translation_placeholders={"config_entry_id": entry_id},
            )
        if found.state is not ConfigEntryState.LOADED:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="entry_not_loaded",
                translation_placeholders={"title": found.title},
            )
        entry = found
    hub: PlaceOSHub = entry.runtime_data
    return hub


async def _async_handle_exec(call: ServiceCall) -> ServiceResponse:
    try:
        data = EXEC_SCHEMA(dict(call.data))
    except vol.Invalid as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="invalid_action_data",
            translation_placeholders={"error": str(err)},
        ) from err
    hub = _async_get_hub(call.hass, data.get(ATTR_CONFIG_ENTRY_ID))
    timeout = data.get(ATTR_TIMEOUT)
    if timeout is None:
        timeout = float(hub.entry.options.get(CONF_EXEC_TIMEOUT, DEFAULT_EXEC_TIMEOUT))
    request = ExecRequest(
        sys=data[ATTR_SYS],
        mod=data[ATTR_MOD],
        index=data[ATTR_INDEX],
        name=data[ATTR_NAME],
        args=data[ATTR_ARGS],
        timeout=timeout,
    )
    return {ATTR_VALUE: await _async_exec(hub, request)}


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register the integration's actions.

    The data is validated inside the handler (not by HA) so invalid input raises a translated
    `ServiceValidationError` like every other input problem.
    """
    hass.services.async_register(
        DOMAIN,
        SERVICE_EXEC,
        _async_handle_exec,
        supports_response=SupportsResponse.OPTIONAL,
    )
