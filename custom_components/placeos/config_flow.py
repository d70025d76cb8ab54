"""Config flows of the PlaceOS integration.

- `PlaceOSConfigFlow`: add an instance (user), re-authenticate (reauth), change URL/key/TLS
  (reconfigure). Every path checks the instance, the key and the WebSocket before it stores
  anything.
- `PlaceOSOptionsFlow`: value decoding, exec timeout, unavailable grace period.
- `SystemSubentryFlow`: add a PlaceOS system with the status variables to bind, or change a
  system's bindings.

Entry and subentry changes end in `async_update_and_abort`: the runtime's update listener
decides whether to reload (HA forbids combining an update listener with the reloading
helpers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
import logging
from typing import Any

from homeassistant.config_entries import (
    SOURCE_RECONFIGURE,
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryFlow,
    OptionsFlow,
    SubentryFlowResult,
)
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
import voluptuous as vol

from .client import (
    Authority,
    BindingKey,
    PlaceOSApi,
    PlaceOSAuthError,
    PlaceOSConnectionError,
    PlaceOSError,
    PlaceOSForbiddenError,
    PlaceOSTimeoutError,
    PlaceOSTLSError,
    PlaceOSWebSocket,
    System,
    normalize_url,
)
from .const import (
    CONF_API_KEY,
    CONF_BINDINGS,
    CONF_EXEC_TIMEOUT,
    CONF_SYS,
    CONF_SYSTEM_NAME,
    CONF_UNAVAILABLE_GRACE,
    CONF_URL,
    CONF_VALUE_DECODING,
    CONF_VERIFY_SSL,
    DEFAULT_EXEC_TIMEOUT,
    DEFAULT_UNAVAILABLE_GRACE,
    DEFAULT_VALUE_DECODING,
    DEFAULT_VERIFY_SSL,
    DOMAIN,
    MAX_EXEC_TIMEOUT,
    MAX_SYSTEM_CHOICES,
    MAX_UNAVAILABLE_GRACE,
    MIN_EXEC_TIMEOUT,
    MODULE_STATE_CONCURRENCY,
    SUBENTRY_TYPE_SYSTEM,
    VALIDATION_TIMEOUT,
    VALUE_DECODING_AUTO,
    VALUE_DECODING_RAW,
)

_LOGGER = logging.getLogger(__name__)

CONF_SEARCH = "search"
CONF_SYSTEM = "system"

_ALLOWED_SCHEMES = ("http", "https")

_URL_SELECTOR = TextSelector(TextSelectorConfig(type=TextSelectorType.URL))
_KEY_SELECTOR = TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="off"))

USER_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_URL): _URL_SELECTOR,
        vol.Required(CONF_API_KEY): _KEY_SELECTOR,
        vol.Required(CONF_VERIFY_SSL, default=DEFAULT_VERIFY_SSL): BooleanSelector(),
    }
)
REAUTH_SCHEMA = vol.Schema({vol.Required(CONF_API_KEY): _KEY_SELECTOR})
# An empty key keeps the stored one, so the form never needs to show it.
RECONFIGURE_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_URL): _URL_SELECTOR,
        vol.Optional(CONF_API_KEY): _KEY_SELECTOR,
        vol.Required(CONF_VERIFY_SSL): BooleanSelector(),
    }
)
OPTIONS_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_VALUE_DECODING, default=DEFAULT_VALUE_DECODING): SelectSelector(
            SelectSelectorConfig(
                options=[VALUE_DECODING_AUTO, VALUE_DECODING_RAW],
                mode=SelectSelectorMode.LIST,
                translation_key=CONF_VALUE_DECODING,
            )
        ),
        vol.Required(CONF_EXEC_TIMEOUT, default=DEFAULT_EXEC_TIMEOUT): NumberSelector(
            NumberSelectorConfig(
                min=MIN_EXEC_TIMEOUT,
                max=MAX_EXEC_TIMEOUT,
                step=1,
                mode=NumberSelectorMode.BOX,
                unit_of_measurement="s",
            )
        ),
        vol.Required(CONF_UNAVAILABLE_GRACE, default=DEFAULT_UNAVAILABLE_GRACE): NumberSelector(
            NumberSelectorConfig(
                min=0,
                max=MAX_UNAVAILABLE_GRACE,
                step=1,
                mode=NumberSelectorMode.BOX,
                unit_of_measurement="s",
            )
        ),
    }
)
SEARCH_SCHEMA = vol.Schema({vol.Optional(CONF_SEARCH): TextSelector()})


def clean_url(raw: str) -> str:
    """The instance origin (`https://host[:port]`) from what the user typed.

    Raises ValueError unless it is an absolute http(s) URL with a host.
    """
    scheme, _, _ = raw.strip().partition(":")
    if scheme.lower() not in _ALLOWED_SCHEMES:
        raise ValueError("only http and https URLs are accepted")
    return str(normalize_url(raw))


async def async_validate_instance(
    hass: HomeAssistant, url: str, api_key: str, verify_ssl: bool
) -> Authority:
    """Check the instance, the key and the WebSocket; return the instance's identity.

    Raises the client's errors (`PlaceOSError` subclasses).
    """
    session = async_get_clientsession(hass, verify_ssl=verify_ssl)
    api = PlaceOSApi(session, url, api_key, verify_ssl=verify_ssl, timeout=VALIDATION_TIMEOUT)
    authority = await api.authority()
    await api.current_user()
    websocket = PlaceOSWebSocket(
        session, url, api_key, verify_ssl=verify_ssl, request_timeout=VALIDATION_TIMEOUT
    )
    try:
        await websocket.probe(timeout=VALIDATION_TIMEOUT)
    finally:
        await websocket.close()
    return authority


def _unique_id(authority: Authority, url: str) -> str:
    """The authority id identifies the instance; the host stands in when it has none."""
    return authority.id or normalize_url(url).host or url


def _title(authority: Authority, url: str) -> str:
    return authority.name or normalize_url(url).host or url


class PlaceOSConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add a PlaceOS instance, re-authenticate it or change its connection."""

    VERSION = 1
    MINOR_VERSION = 1

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> PlaceOSOptionsFlow:
        """The options flow of an entry."""
        return PlaceOSOptionsFlow()

    @classmethod
    @callback
    def async_get_supported_subentry_types(
        cls, config_entry: ConfigEntry
    ) -> dict[str, type[ConfigSubentryFlow]]:
        """Systems are added to an entry as subentries."""
        return {SUBENTRY_TYPE_SYSTEM: SystemSubentryFlow}

    async def _async_try_connect(
        self, url: str, api_key: str, verify_ssl: bool, errors: dict[str, str]
    ) -> Authority | None:
        """Validate the connection; on failure fill `errors` and return None."""
        try:
            return await async_validate_instance(self.hass, url, api_key, verify_ssl)
        except PlaceOSTLSError:
            errors["base"] = "ssl_error"
        except PlaceOSConnectionError:
            errors["base"] = "cannot_connect"
        except PlaceOSForbiddenError:
            errors["base"] = "forbidden"
        except PlaceOSAuthError:
            errors["base"] = "invalid_auth"
        except PlaceOSTimeoutError:
            errors["base"] = "timeout"
        except Exception:
            _LOGGER.exception("Unexpected error while checking the PlaceOS instance at %s", url)
            errors["base"] = "unknown"
        return None

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the instance URL, the API key and TLS verification."""
        errors: dict[str, str] = {}
        if user_input is not None:
            verify_ssl: bool = user_input[CONF_VERIFY_SSL]
            try:
                url = clean_url(user_input[CONF_URL])
            except ValueError:
                errors[CONF_URL] = "invalid_url"
            else:
                api_key: str = user_input[CONF_API_KEY].strip()
                authority = await self._async_try_connect(url, api_key, verify_ssl, errors)
                if authority is not None:
                    await self.async_set_unique_id(_unique_id(authority, url))
                    self._abort_if_unique_id_configured()
                    return self.async_create_entry(
                        title=_title(authority, url),
                        data={CONF_URL: url, CONF_API_KEY: api_key, CONF_VERIFY_SSL: verify_ssl},
                        options={
                            CONF_VALUE_DECODING: DEFAULT_VALUE_DECODING,
                            CONF_EXEC_TIMEOUT: DEFAULT_EXEC_TIMEOUT,
                            CONF_UNAVAILABLE_GRACE: DEFAULT_UNAVAILABLE_GRACE,
                        },
                    )
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(USER_SCHEMA, _without_key(user_input)),
            errors=errors,
        )

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """The stored key was rejected: ask for a new one."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a new API key for the same instance."""
        entry = self._get_reauth_entry()
        url: str = entry.data[CONF_URL]
        errors: dict[str, str] = {}
        if user_input is not None:
            api_key: str = user_input[CONF_API_KEY].strip()
            authority = await self._async_try_connect(
                url, api_key, entry.data[CONF_VERIFY_SSL], errors
            )
            if authority is not None:
                await self.async_set_unique_id(_unique_id(authority, url))
                self._abort_if_unique_id_mismatch()
                return self._async_update_and_abort(entry, {CONF_API_KEY: api_key})
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=REAUTH_SCHEMA,
            errors=errors,
            description_placeholders={CONF_URL: url},
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the URL, the key (empty keeps it) or TLS verification of an entry."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            verify_ssl: bool = user_input[CONF_VERIFY_SSL]
            try:
                url = clean_url(user_input[CONF_URL])
            except ValueError:
                errors[CONF_URL] = "invalid_url"
            else:
                api_key: str = user_input.get(CONF_API_KEY, "").strip() or entry.data[CONF_API_KEY]
                authority = await self._async_try_connect(url, api_key, verify_ssl, errors)
                if authority is not None:
                    await self.async_set_unique_id(_unique_id(authority, url))
                    self._abort_if_unique_id_mismatch()
                    return self._async_update_and_abort(
                        entry, {CONF_URL: url, CONF_API_KEY: api_key, CONF_VERIFY_SSL: verify_ssl}
                    )
        suggested = _without_key(user_input) or {
            CONF_URL: entry.data[CONF_URL],
            CONF_VERIFY_SSL: entry.data[CONF_VERIFY_SSL],
        }
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(RECONFIGURE_SCHEMA, suggested),
            errors=errors,
        )

    @callback
    def _async_update_and_abort(
        self, entry: ConfigEntry, data_updates: Mapping[str, Any]
    ) -> ConfigFlowResult:
        """Store the new data; make sure an entry whose setup failed gets another try.

        A loaded entry has the runtime's update listener, which reloads on a data change.
        An entry whose setup failed (rejected key, instance down) has no listener, so nothing
        else would retry it with the new data.
        """
        needs_reload = not entry.update_listeners
        result = self.async_update_and_abort(entry, data_updates=data_updates)
        if needs_reload:
            self.hass.config_entries.async_schedule_reload(entry.entry_id)
        return result


def _without_key(user_input: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The user's input to re-show on a form, without the API key."""
    if user_input is None:
        return None
    return {key: value for key, value in user_input.items() if key != CONF_API_KEY}


class PlaceOSOptionsFlow(OptionsFlow):
    """Value decoding, exec timeout and how long to wait before entities go unavailable."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Show and store the options."""
        if user_input is not None:
            return self.async_create_entry(data=user_input)
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                OPTIONS_SCHEMA, self.config_entry.options
            ),
        )


class SystemSubentryFlow(ConfigSubentryFlow):
    """Add a PlaceOS system to an entry, or change which statuses of it are bound."""

    def __init__(self) -> None:
        """Start with nothing chosen."""
        self._search: str | None = None
        self._systems: list[System] = []
        self._system: System | None = None
        # label -> key of every status offered on the bindings step (module state + current)
        self._known: dict[str, BindingKey] = {}
        self._current: list[str] = []

    def _api(self, entry: ConfigEntry) -> PlaceOSApi:
        verify_ssl: bool = entry.data[CONF_VERIFY_SSL]
        return PlaceOSApi(
            async_get_clientsession(self.hass, verify_ssl=verify_ssl),
            entry.data[CONF_URL],
            entry.data[CONF_API_KEY],
            verify_ssl=verify_ssl,
            timeout=VALIDATION_TIMEOUT,
        )

    @staticmethod
    def _abort_reason(err: Exception) -> str:
        """Map a failed request to an abort reason (called from an except block)."""
        if isinstance(err, PlaceOSAuthError):
            return "invalid_auth"
        if isinstance(err, PlaceOSConnectionError) and err.status == 404:
            return "system_not_found"
        if isinstance(err, PlaceOSError):
            return "cannot_connect"
        _LOGGER.error("Unexpected error while reading systems from PlaceOS", exc_info=err)
        return "unknown"

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Ask for an optional search text, then list the matching systems."""
        entry = self._get_entry()
        if entry.state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")
        errors: dict[str, str] = {}
        if user_input is not None:
            self._search = user_input.get(CONF_SEARCH, "").strip() or None
            try:
                self._systems = await self._api(entry).systems(
                    q=self._search, limit=MAX_SYSTEM_CHOICES
                )
            except Exception as err:  # every failure ends in a translated abort
                return self.async_abort(reason=self._abort_reason(err))
            if self._systems:
                return await self.async_step_pick_system()
            errors["base"] = "no_systems"
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(
                SEARCH_SCHEMA, {CONF_SEARCH: self._search or ""}
            ),
            errors=errors,
        )

    async def async_step_pick_system(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Pick one of the systems found."""
        if user_input is not None:
            sys_id: str = user_input[CONF_SYSTEM]
            entry = self._get_entry()
            if any(sub.unique_id == sys_id for sub in entry.subentries.values()):
                return self.async_abort(reason="already_configured")
            return await self._async_load_system(entry, sys_id, [])
        options = [
            SelectOptionDict(value=system.id, label=f"{_system_name(system)} ({system.id})")
            for system in self._systems
        ]
        return self.async_show_form(
            step_id="pick_system",
            data_schema=vol.Schema(
                {
                    vol.Required(CONF_SYSTEM): SelectSelector(
                        SelectSelectorConfig(
                            options=options, mode=SelectSelectorMode.DROPDOWN, sort=True
                        )
                    )
                }
            ),
            description_placeholders={"count": str(len(options))},
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Change the bindings of a system: the bindings step, pre-filled."""
        entry = self._get_entry()
        if entry.state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")
        subentry = self._get_reconfigure_subentry()
        sys_id: str = subentry.data[CONF_SYS]
        current = [
            BindingKey(sys_id, binding["mod"], binding["index"], binding["name"])
            for binding in subentry.data[CONF_BINDINGS]
        ]
        return await self._async_load_system(entry, sys_id, current)

    async def _async_load_system(
        self, entry: ConfigEntry, sys_id: str, current: list[BindingKey]
    ) -> SubentryFlowResult:
        """Fetch the system and its module state, then show the bindings step."""
        api = self._api(entry)
        try:
            system = await api.system(sys_id)
            offered = await _async_module_states(api, system)
        except Exception as err:  # every failure ends in a translated abort
            return self.async_abort(reason=self._abort_reason(err))
        self._system = system
        # Current bindings stay on offer even when the module state no longer has them.
        self._known = {key.label: key for key in (*offered, *current)}
        self._current = [key.label for key in current]
        return await self.async_step_bindings()

    async def async_step_bindings(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Pick the statuses to bind; free text adds statuses that do not exist yet."""
        assert self._system is not None
        system = self._system
        errors: dict[str, str] = {}
        placeholders = {"system": _system_name(system), "sys": system.id, "binding": ""}
        selected = self._current
        if user_input is not None:
            selected = user_input.get(CONF_BINDINGS, [])
            keys: dict[BindingKey, None] = {}  # an ordered set: keeps the user's order
            for label in selected:
                key = self._known.get(label)
                if key is None:
                    try:
                        key = BindingKey.parse(system.id, label)
                    except ValueError:
                        errors[CONF_BINDINGS] = "invalid_binding"
                        placeholders["binding"] = label
                        break
                keys[key] = None
            else:
                if not keys:
                    errors[CONF_BINDINGS] = "no_bindings"
            if not errors:
                return self._async_finish(system, keys)
        options = [*self._known, *(label for label in selected if label not in self._known)]
        return self.async_show_form(
            step_id="bindings",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {
                        vol.Optional(CONF_BINDINGS): SelectSelector(
                            SelectSelectorConfig(
                                options=options,
                                multiple=True,
                                custom_value=True,
                                mode=SelectSelectorMode.DROPDOWN,
                                sort=True,
                            )
                        )
                    }
                ),
                {CONF_BINDINGS: selected},
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    @callback
    def _async_finish(self, system: System, keys: Iterable[BindingKey]) -> SubentryFlowResult:
        """Create the subentry, or update it when reconfiguring."""
        data = {
            CONF_SYS: system.id,
            CONF_SYSTEM_NAME: _system_name(system),
            CONF_BINDINGS: [{"mod": key.mod, "index": key.index, "name": key.name} for key in keys],
        }
        if self.source == SOURCE_RECONFIGURE:
            return self.async_update_and_abort(
                self._get_entry(), self._get_reconfigure_subentry(), data=data
            )
        return self.async_create_entry(title=_system_name(system), data=data, unique_id=system.id)


def _system_name(system: System) -> str:
    return system.name or system.label


async def _async_module_states(api: PlaceOSApi, system: System) -> list[BindingKey]:
    """Every status of every module of the system, fetched concurrently with a bound."""
    limit = asyncio.Semaphore(MODULE_STATE_CONCURRENCY)

    async def status_names(mod: str, index: int) -> list[str]:
        async with limit:
            return sorted(await api.module_state(system.id, mod, index))

    modules = [(module.binding_name, module.index) for module in system.modules]
    try:
        # A task group (unlike a bare gather) cancels the other requests on the first failure.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(status_names(mod, index)) for mod, index in modules]
    except ExceptionGroup as err:
        raise err.exceptions[0] from None
    return [
        BindingKey(system.id, mod, index, name)
        for (mod, index), task in zip(modules, tasks, strict=True)
        for name in task.result()
    ]
