"""Pure-asyncio client for PlaceOS: the control WebSocket and the discovery REST API.

Nothing here imports Home Assistant; the package could be published on its own. Both clients
take an `aiohttp.ClientSession` from the caller.
"""

from __future__ import annotations

from .decode import ValueDecoding, decode_auto, decode_value
from .errors import (
    ErrorCode,
    PlaceOSAuthError,
    PlaceOSCommandError,
    PlaceOSConnectionError,
    PlaceOSError,
    PlaceOSForbiddenError,
    PlaceOSNotConnectedError,
    PlaceOSTimeoutError,
    PlaceOSTLSError,
)
from .models import (
    Authority,
    BindingKey,
    ConnectionState,
    ModuleInfo,
    NotifyCallback,
    StateCallback,
    System,
    Zone,
    normalize_url,
    websocket_url,
)
from .rest import PlaceOSApi
from .websocket import PlaceOSWebSocket

__all__ = [
    "Authority",
    "BindingKey",
    "ConnectionState",
    "ErrorCode",
    "ModuleInfo",
    "NotifyCallback",
    "PlaceOSApi",
    "PlaceOSAuthError",
    "PlaceOSCommandError",
    "PlaceOSConnectionError",
    "PlaceOSError",
    "PlaceOSForbiddenError",
    "PlaceOSNotConnectedError",
    "PlaceOSTLSError",
    "PlaceOSTimeoutError",
    "PlaceOSWebSocket",
    "StateCallback",
    "System",
    "ValueDecoding",
    "Zone",
    "decode_auto",
    "decode_value",
    "normalize_url",
    "websocket_url",
]
