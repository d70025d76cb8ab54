"""Exceptions raised by the PlaceOS client.

No exception text ever contains the API key: messages are built from the status, the URL
without credentials and the server's own error text only.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    """Error categories of a PlaceOS `error` reply (`error_code`)."""

    PARSE_ERROR = 0
    BAD_REQUEST = 1
    ACCESS_DENIED = 2
    REQUEST_FAILED = 3
    UNKNOWN_COMMAND = 4
    SYSTEM_NOT_FOUND = 5
    MODULE_NOT_FOUND = 6
    UNEXPECTED_FAILURE = 7


class PlaceOSError(Exception):
    """Base class of every error raised by this client."""


class PlaceOSConnectionError(PlaceOSError):
    """The server could not be reached or the connection failed or was lost.

    `status` holds the HTTP status when the server answered with an unexpected one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PlaceOSTLSError(PlaceOSConnectionError):
    """The TLS handshake failed, usually because the certificate was not trusted."""


class PlaceOSAuthError(PlaceOSError):
    """The server rejected the API key (HTTP 401: unknown, expired or revoked)."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class PlaceOSForbiddenError(PlaceOSAuthError):
    """The API key is valid but lacks the required scope (HTTP 403)."""

    def __init__(self, message: str, *, status: int = 403) -> None:
        super().__init__(message, status=status)


class PlaceOSTimeoutError(PlaceOSError):
    """A request got no reply in time (the server stays silent on malformed requests)."""


class PlaceOSNotConnectedError(PlaceOSError):
    """A command was issued while the WebSocket is not connected."""


class PlaceOSCommandError(PlaceOSError):
    """The server answered a request with `type: error`.

    `error_code` is the category (see `ErrorCode`), `message` the server's text and `code`
    the HTTP-like code (usually 500, or the driver's own code for error 3).
    """

    def __init__(self, error_code: int | None, message: str, code: int | None = None) -> None:
        self.error_code = error_code
        self.message = message
        self.code = code
        super().__init__(
            f"{message} (error_code={error_code})" if error_code is not None else message
        )

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> PlaceOSCommandError:
        """Build the error from an `error` reply.

        The category is `error_code`; the official TypeScript client reads it from `code`,
        so a server following that bug is accepted too when `code` is in 0..7.
        """
        raw_error_code = frame.get("error_code")
        raw_code = frame.get("code")
        code = raw_code if type(raw_code) is int else None
        error_code: int | None
        if type(raw_error_code) is int:
            error_code = raw_error_code
        elif code is not None and 0 <= code <= 7:
            error_code = code
        else:
            error_code = None
        raw_message = frame.get("msg")
        message = raw_message if isinstance(raw_message, str) else "request failed"
        return cls(error_code, message, code)

    @property
    def category(self) -> ErrorCode | None:
        """The error category as an `ErrorCode`, or None when unknown."""
        try:
            return ErrorCode(self.error_code) if self.error_code is not None else None
        except ValueError:
            return None
