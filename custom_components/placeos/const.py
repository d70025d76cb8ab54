"""Constants of the PlaceOS integration."""

from __future__ import annotations

from typing import Final

DOMAIN: Final = "placeos"

# Config entry data
CONF_URL: Final = "url"
CONF_API_KEY: Final = "api_key"
CONF_VERIFY_SSL: Final = "verify_ssl"

# Config entry options
CONF_VALUE_DECODING: Final = "value_decoding"
CONF_EXEC_TIMEOUT: Final = "exec_timeout"
CONF_UNAVAILABLE_GRACE: Final = "unavailable_grace"

VALUE_DECODING_AUTO: Final = "auto"
VALUE_DECODING_RAW: Final = "raw"

DEFAULT_VERIFY_SSL: Final = True
DEFAULT_VALUE_DECODING: Final = VALUE_DECODING_AUTO
DEFAULT_EXEC_TIMEOUT: Final = 10.0
MAX_EXEC_TIMEOUT: Final = 300.0
DEFAULT_UNAVAILABLE_GRACE: Final = 0.0

# Config subentry "system": data = {CONF_SYS: "sys-…", CONF_SYSTEM_NAME: "Room 1",
#   CONF_BINDINGS: [{"mod": "Display", "index": 1, "name": "power"}, …]}
SUBENTRY_TYPE_SYSTEM: Final = "system"
CONF_SYS: Final = "sys"
CONF_SYSTEM_NAME: Final = "system_name"
CONF_BINDINGS: Final = "bindings"

# How long setup waits for the first connection before ConfigEntryNotReady.
SETUP_TIMEOUT: Final = 15.0

SERVICE_EXEC: Final = "exec"

# Config flow
MIN_EXEC_TIMEOUT: Final = 1.0
MAX_UNAVAILABLE_GRACE: Final = 600.0
# How long each check of the config flow (authority, key, WebSocket) may take.
VALIDATION_TIMEOUT: Final = 10.0
# Module state requests in flight at once while the bindings step is built.
MODULE_STATE_CONCURRENCY: Final = 8

# Service fields of placeos.exec, and the key of its response.
ATTR_SYS: Final = "sys"
ATTR_MOD: Final = "mod"
ATTR_INDEX: Final = "index"
ATTR_NAME: Final = "name"
ATTR_ARGS: Final = "args"
ATTR_CONFIG_ENTRY_ID: Final = "config_entry_id"
ATTR_TIMEOUT: Final = "timeout"
ATTR_VALUE: Final = "value"
# Bounds of the action's `timeout` field (the `exec_timeout` option has its own minimum).
MIN_EXEC_CALL_TIMEOUT: Final = 0.1

# HA rejects states longer than this (they would become `unknown` with an error logged).
MAX_STATE_LENGTH: Final = 255

MANUFACTURER: Final = "PlaceOS"
DEVICE_MODEL: Final = "System"
# Most systems offered in the config flow's dropdown; a search narrows larger sites.
MAX_SYSTEM_CHOICES: Final = 1000
