"""Client parts that need no server: decoding, models, errors, URLs, backoff."""

from __future__ import annotations

from typing import Any

import pytest

from custom_components.placeos.client import (
    Authority,
    BindingKey,
    ConnectionState,
    ErrorCode,
    PlaceOSAuthError,
    PlaceOSCommandError,
    PlaceOSConnectionError,
    PlaceOSError,
    PlaceOSForbiddenError,
    PlaceOSTLSError,
    System,
    ValueDecoding,
    Zone,
    decode_auto,
    decode_value,
    normalize_url,
    websocket_url,
)
from custom_components.placeos.client.decode import parse_decoding
from custom_components.placeos.client.websocket import backoff_delay

# ---------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[]", []),
        ('{"a": 1}', {"a": 1}),
        ("true", True),
        ("false", False),
        ("null", None),
        ("42", 42),
        ("-1.5", -1.5),
        ('"hdmi"', "hdmi"),
        (" [1] ", [1]),
        ("hdmi", "hdmi"),  # a plain word is not JSON: kept
        ("", ""),
        ("[1,", "[1,"),  # broken JSON: kept
        ("NaN", "NaN"),  # not JSON, although Python's json would accept it
        ("-Infinity", "-Infinity"),
        ("nope", "nope"),  # starts like `null` but is not
        ("[" * 100_000, "[" * 100_000),  # absurd nesting: kept, no RecursionError
        (True, True),
        (3, 3),
        (None, None),
        ([1, "2"], [1, "2"]),  # only a top-level string is decoded
        ({"a": "1"}, {"a": "1"}),
    ],
)
def test_decode_auto(value: Any, expected: Any) -> None:
    """`auto` parses strings holding JSON and leaves everything else alone."""
    assert decode_auto(value) == expected
    assert decode_value(value, "auto") == expected
    assert decode_value(value, ValueDecoding.AUTO) == expected


@pytest.mark.parametrize("value", ["[]", "true", "hdmi", 1, None, {"a": "1"}])
def test_decode_raw(value: Any) -> None:
    """`raw` returns every value untouched."""
    assert decode_value(value, "raw") is value


def test_parse_decoding() -> None:
    """Only `auto` and `raw` are valid options."""
    assert parse_decoding("auto") is ValueDecoding.AUTO
    assert parse_decoding(ValueDecoding.RAW) is ValueDecoding.RAW
    with pytest.raises(ValueError, match="value_decoding"):
        parse_decoding("json")


# ---------------------------------------------------------------------------- binding keys


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Display_2.power", BindingKey("sys-1", "Display", 2, "power")),
        ("Display_1.power", BindingKey("sys-1", "Display", 1, "power")),
        ("Display.power", BindingKey("sys-1", "Display", 1, "power")),
        ("Room_Sensor_3.temp", BindingKey("sys-1", "Room_Sensor", 3, "temp")),
        ("Room_Sensor.temp", BindingKey("sys-1", "Room_Sensor", 1, "temp")),
        ("_Admin_1.firmware", BindingKey("sys-1", "_Admin", 1, "firmware")),
        (" Bookings_1.bookings ", BindingKey("sys-1", "Bookings", 1, "bookings")),
        ("Mod_1.a.b", BindingKey("sys-1", "Mod", 1, "a.b")),
    ],
)
def test_binding_key_parse(label: str, expected: BindingKey) -> None:
    """PlaceOS notation parses into (sys, mod, index, name)."""
    key = BindingKey.parse("sys-1", label)
    assert key == expected
    assert BindingKey.parse(" sys-1 ", key.label) == key


@pytest.mark.parametrize(
    ("sys", "label"),
    [
        ("sys-1", "Display_1"),
        ("sys-1", "Display_1."),
        ("sys-1", ".power"),
        ("sys-1", "Display_0.power"),
        ("sys-1", ""),
        ("", "Display_1.power"),
        ("  ", "Display_1.power"),
    ],
)
def test_binding_key_parse_invalid(sys: str, label: str) -> None:
    """Incomplete labels, index 0 and empty system ids are rejected."""
    with pytest.raises(ValueError):
        BindingKey.parse(sys, label)


def test_binding_key_labels_and_tuple_equality() -> None:
    """Labels render PlaceOS notation; a key equals (and hashes like) the plain tuple."""
    key = BindingKey("sys-1", "Display", 2, "power")
    assert key.label == "Display_2.power"
    assert key.module_label == "Display_2"
    assert key == ("sys-1", "Display", 2, "power")
    assert {key: 1}[("sys-1", "Display", 2, "power")] == 1  # type: ignore[index]


def test_binding_key_from_meta() -> None:
    """`meta` builds a key; anything malformed gives None."""
    meta = {"sys": "sys-1", "mod": "Display", "index": 1, "name": "power"}
    assert BindingKey.from_meta(meta) == BindingKey("sys-1", "Display", 1, "power")
    assert BindingKey.from_meta({**meta, "extra": 1}) == BindingKey("sys-1", "Display", 1, "power")
    assert BindingKey.from_meta({**meta, "index": "1"}) is None
    assert BindingKey.from_meta({**meta, "index": True}) is None
    assert BindingKey.from_meta({**meta, "sys": None}) is None
    assert BindingKey.from_meta({**meta, "mod": 1}) is None
    assert BindingKey.from_meta({**meta, "name": ["x"]}) is None
    assert BindingKey.from_meta({"sys": "s"}) is None
    assert BindingKey.from_meta("meta") is None  # type: ignore[arg-type]


def test_connection_state_values() -> None:
    """States are strings (handy in diagnostics)."""
    assert ConnectionState.AUTH_FAILED == "auth_failed"
    assert {state.value for state in ConnectionState} == {
        "connecting",
        "syncing",
        "connected",
        "disconnected",
        "auth_failed",
        "closed",
    }


# ---------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "origin", "ws"),
    [
        (
            "https://placeos.example.com",
            "https://placeos.example.com",
            "wss://placeos.example.com/api/engine/v2/systems/control",
        ),
        (
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080",
            "ws://127.0.0.1:8080/api/engine/v2/systems/control",
        ),
        (
            " https://user:secret@Place.Example.com:8443/backoffice/?x=1#frag ",
            "https://place.example.com:8443",
            "wss://place.example.com:8443/api/engine/v2/systems/control",
        ),
        ("wss://h.example", "https://h.example", "wss://h.example/api/engine/v2/systems/control"),
        ("ws://[::1]:81", "http://[::1]:81", "ws://[::1]:81/api/engine/v2/systems/control"),
    ],
)
def test_urls(url: str, origin: str, ws: str) -> None:
    """The instance origin drops credentials and paths; the socket URL follows the scheme."""
    assert str(normalize_url(url)) == origin
    assert str(websocket_url(url)) == ws


@pytest.mark.parametrize("url", ["placeos.example.com", "ftp://x.example", "https://", "", "::"])
def test_urls_invalid(url: str) -> None:
    """Anything but an absolute http(s)/ws(s) URL with a host is rejected."""
    with pytest.raises(ValueError, match=r"https://placeos\.example\.com"):
        normalize_url(url)


# ---------------------------------------------------------------------------- errors


def test_error_hierarchy() -> None:
    """The hierarchy lets callers catch broadly or precisely."""
    assert issubclass(PlaceOSTLSError, PlaceOSConnectionError)
    assert issubclass(PlaceOSForbiddenError, PlaceOSAuthError)
    assert issubclass(PlaceOSCommandError, PlaceOSError)
    assert PlaceOSAuthError("x").status == 401
    assert PlaceOSForbiddenError("x").status == 403
    assert PlaceOSConnectionError("x").status is None
    assert PlaceOSConnectionError("x", status=502).status == 502


@pytest.mark.parametrize(
    ("frame", "error_code", "code", "message"),
    [
        ({"error_code": 6, "code": 500, "msg": "could not find module"}, 6, 500, None),
        ({"error_code": 3, "code": 404, "msg": "module raised: x"}, 3, 404, None),
        ({"code": 2, "msg": "denied"}, 2, 2, None),  # the TS client's reading of `code`
        ({"code": 500, "msg": "boom"}, None, 500, None),  # 500 is no category
        ({"error_code": 0}, 0, None, "request failed"),
        ({"error_code": "6", "code": "500", "msg": 5}, None, None, "request failed"),
        ({"error_code": 9, "msg": "new"}, 9, None, None),
    ],
)
def test_command_error_from_frame(
    frame: dict[str, Any], error_code: int | None, code: int | None, message: str | None
) -> None:
    """The category prefers `error_code` and falls back to `code` in 0..7."""
    error = PlaceOSCommandError.from_frame({"id": 1, "type": "error", **frame})
    assert error.error_code == error_code
    assert error.code == code
    assert error.message == (message if message is not None else frame["msg"])
    if error_code is not None:
        assert f"error_code={error_code}" in str(error)
    else:
        assert str(error) == error.message


def test_command_error_category() -> None:
    """`category` names known codes only."""
    assert PlaceOSCommandError(6, "m").category is ErrorCode.MODULE_NOT_FOUND
    assert PlaceOSCommandError(9, "m").category is None
    assert PlaceOSCommandError(None, "m").category is None


# ---------------------------------------------------------------------------- models


def test_authority_from_dict() -> None:
    """The authority keeps identity fields and knows legacy versions."""
    authority = Authority.from_dict(
        {
            "id": "authority-1",
            "name": "Site",
            "domain": "site.example",
            "version": "3.12.0",
            "production": True,
            "config": {"x": 1},
        }
    )
    assert authority == Authority("authority-1", "Site", "site.example", "3.12.0", "", True)
    assert authority.is_v2
    assert not Authority.from_dict({"id": "a", "version": "1.9.9"}).is_v2
    assert not Authority.from_dict({"id": "a", "version": "garbage"}).is_v2
    assert Authority.from_dict({"id": "a", "version": "v2.0.1"}).is_v2
    assert Authority.from_dict({"id": "a", "production": "yes"}).production is None
    with pytest.raises(ValueError, match="no id"):
        Authority.from_dict({"name": "x"})
    with pytest.raises(TypeError):
        Authority.from_dict([])  # type: ignore[arg-type]


def test_system_modules_numbered_by_binding_name() -> None:
    """Custom names take precedence; indexes follow the system's module order."""
    system = System.from_dict(
        {
            "id": "sys-1",
            "name": "Room",
            "display_name": "",
            "zones": ["zone-1", 7],
            "modules": ["mod-a", "mod-b", "mod-c", "mod-d"],
            "module_data": [
                # Deliberately not in system order.
                {"id": "mod-c", "name": "Samsung", "custom_name": "Display", "connected": True},
                {"id": "mod-a", "name": "Display", "driver": {"name": "LG"}, "running": False},
                {"id": "mod-b", "name": "", "driver": {"module_name": "Lighting"}},
                {"id": "mod-x", "name": "Extra"},  # not listed in `modules`: last
                {"id": "mod-d", "name": ""},  # no name at all: skipped
                {"name": "no id"},
                "junk",
            ],
        }
    )
    assert system.label == "Room"
    assert system.zones == ["zone-1"]
    assert [(m.id, m.label) for m in system.modules] == [
        ("mod-a", "Display_1"),
        ("mod-b", "Lighting_1"),
        ("mod-c", "Display_2"),
        ("mod-x", "Extra_1"),
    ]
    display_2 = system.modules[2]
    assert (display_2.name, display_2.custom_name, display_2.connected) == (
        "Samsung",
        "Display",
        True,
    )
    assert system.modules[0].driver_name == "LG"
    assert system.modules[0].running is False
    assert System.from_dict({"id": "sys-2", "display_name": "Nice"}).label == "Nice"
    assert System.from_dict({"id": "sys-3"}).label == "sys-3"
    with pytest.raises(ValueError, match="no id"):
        System.from_dict({"id": ""})


def test_zone_from_dict() -> None:
    """Zones keep tags and the parent."""
    zone = Zone.from_dict({"id": "zone-1", "name": "L1", "tags": ["level"], "parent_id": "z0"})
    assert zone == Zone("zone-1", "L1", "", "", ["level"], "z0")
    assert Zone.from_dict({"id": "zone-2", "parent_id": ""}).parent_id is None
    assert Zone.from_dict({"id": "zone-2", "tags": "x"}).tags == []


# ---------------------------------------------------------------------------- backoff


def test_backoff_is_exponential_capped_and_jittered() -> None:
    """Delays double from the minimum, stop at the maximum and jitter in the upper half."""

    def upper(low: float, high: float) -> float:
        return high

    def lower(low: float, high: float) -> float:
        return low

    assert [backoff_delay(n, 1, 60, upper) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert [backoff_delay(n, 1, 60, lower) for n in range(1, 9)] == [1, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(0, 1, 60, upper) == 1
    assert backoff_delay(10_000, 1, 60, upper) == 60  # no overflow for long outages
    for attempt in range(1, 12):
        assert 0.01 <= backoff_delay(attempt, 0.01, 0.05) <= 0.05
