"""Decoding of status values.

The current PlaceOS server embeds values as raw JSON (`"value": true`); servers older than late
2021 and the documentation send stringified JSON (`"value": "[]"`). In `auto` mode a string
value that parses as JSON is replaced by the parsed value and anything else is used as it is,
which serves both. `raw` leaves every value untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
import json
from typing import Any, Final, NoReturn

fast_loads: Callable[[str], Any]
"""`orjson.loads` where available (Home Assistant always ships it), else `json.loads`.

orjson is about four times faster than the standard library. Its result equals
`json.loads`'s for every text both accept, with one exception: an integer beyond 64 bits
becomes a float. Everything else the two treat differently (NaN, Infinity, numbers beyond the
float range, lone surrogates, nesting deeper than 1024) orjson rejects, so a caller that falls
back to `json.loads` on an error, and on a float that may have been such an integer (see
`FAST_FLOAT_EXACT`), gets exactly the standard library's result.
"""
try:
    import orjson

    fast_loads = orjson.loads
except ImportError:  # pragma: no cover - outside Home Assistant, without orjson
    fast_loads = json.loads

# orjson keeps integers in [-2**63, 2**64) exact and turns any other into a float of at least
# this magnitude: a float strictly inside the bounds cannot be such an integer.
FAST_FLOAT_EXACT: Final = 2.0**63


class ValueDecoding(StrEnum):
    """How string values are treated."""

    AUTO = "auto"
    RAW = "raw"


def _reject_constant(name: str) -> NoReturn:
    # `NaN`, `Infinity` and `-Infinity` are not JSON; keep such strings as text.
    raise ValueError(name)


_STRICT_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
_decode_json: Final = _STRICT_DECODER.decode

# The characters a JSON text can start with. Checking the first character first spares the
# cost of a raised JSONDecodeError for ordinary words such as "hdmi" or "on".
_JSON_START: Final = frozenset('{["-0123456789tfn \t\r\n')


def decode_auto(value: Any) -> Any:
    """Return the parsed JSON if `value` is a string holding JSON, else `value` itself."""
    if type(value) is not str or value[:1] not in _JSON_START:
        return value
    try:
        return _decode_json(value)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return value


def decode_value(value: Any, mode: ValueDecoding | str = ValueDecoding.AUTO) -> Any:
    """Decode one status or exec value according to `mode` (`auto` or `raw`)."""
    if mode == ValueDecoding.RAW:
        return value
    return decode_auto(value)


def parse_decoding(mode: ValueDecoding | str) -> ValueDecoding:
    """Validate a decoding option; raises ValueError for anything but `auto` or `raw`."""
    try:
        return ValueDecoding(mode)
    except ValueError:
        raise ValueError(f"value_decoding must be 'auto' or 'raw', not {mode!r}") from None
