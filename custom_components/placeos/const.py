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
