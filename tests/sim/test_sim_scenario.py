"""Scenario data: the demo building, JSON loading, declarative methods, demo activity."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
import random

import aiohttp

from placeos_sim import MethodSpec, Module, PlaceOSSimulator, Scenario, System
from placeos_sim.scenario import UNSET, demo_data
from tests.sim.helpers import SYS, connect

SCENARIO_JSON = {
    "authority": {"id": "authority-test", "name": "Test Site", "domain": "placeos.test"},
    "zones": [{"id": "zone-a", "name": "Zone A", "tags": ["building"]}],
    "systems": [
        {
            "id": "sys-t1",
            "name": "Test Room",
            "zones": ["zone-a"],
            "modules": [
                {
                    "id": "mod-sw1",
                    "name": "Switcher",
                    "driver": {"name": "Extron", "module_name": "Switcher"},
                    "status": {"route": {"1": 2}, "ignored": None},
                    "methods": {
                        "switch": {
                            "params": {"input": "Int32", "output": ["Int32", 1]},
                            "sets": "route",
                        },
                        "fixed": {"returns": {"ok": True}},
                        "broken": {"raises": "device offline", "code": 503},
                        "slow": {"delay": 0.01, "returns": 42},
                        "secret": {"privileged": True, "params": ["a", "b"]},
                    },
                },
                {"name": "Camera", "custom_name": "Switcher", "running": False},
            ],
        }
    ],
}


def test_demo_building_shape() -> None:
    """Three rooms in zones; Display_2 is a custom-named module; statuses typed as promised."""
    demo = Scenario.demo(now=1_700_000_000)
    assert [s.name for s in demo.systems] == [
        "Room 1.01 Boardroom",
        "Room 1.02 Huddle",
        "Level 1 Lobby",
    ]
    room = demo.system(SYS)
    assert room is not None
    display2 = room.resolve("Display", 2)
    assert display2 is not None
    assert (display2.name, display2.custom_name, display2.binding_name) == (
        "Samsung Display",
        "Display",
        "Display",
    )
    display1 = demo.module(SYS, "Display", 1)
    assert display1 is not None
    assert isinstance(display1.status["power"], bool)
    assert isinstance(display1.status["volume"], int)
    assert isinstance(display1.status["input"], str)
    lighting = demo.module(SYS, "Lighting", 1)
    assert lighting is not None
    assert set(lighting.methods) == {"scene", "level"}
    bookings = demo.module(SYS, "Bookings", 1)
    assert bookings is not None
    first = bookings.status["bookings"][0]
    assert first["event_start"] == 1_700_000_000 // 3600 * 3600
    occupancy = demo.module("sys-lobby1", "Occupancy", 1)
    assert occupancy is not None
    assert set(occupancy.status) == {"presence", "people_count"}
    admin = demo.module(SYS, "_Admin", 1)
    assert admin is not None
    assert admin.protected
    assert not display1.protected
    assert demo.module("sys-nope", "Display", 1) is None
    assert demo.module(SYS, "Display", 3) is None
    assert demo.module_by_id("mod-occu0301") == (demo.systems[2], occupancy)
    assert demo.module_by_id("mod-nope") is None
    assert len(list(demo.iter_modules())) == 6 + 3 + 2
    assert [z.parent_id for z in demo.zones] == [None, "zone-org0001", "zone-bld0001"]


def test_round_trip_and_file_loading(tmp_path: Path) -> None:
    """from_dict(to_dict()) is equal; from_file reads the same JSON; defaults fill gaps."""
    demo = Scenario.demo(now=0)
    again = Scenario.from_dict(json.loads(json.dumps(demo.to_dict())))
    assert again.to_dict() == demo.to_dict()
    assert again.systems[0].modules == demo.systems[0].modules
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(SCENARIO_JSON), encoding="utf-8")
    loaded = Scenario.from_file(path)
    assert loaded.authority["name"] == "Test Site"
    assert loaded.authority["version"] == "3.12.0"  # default filled in
    assert loaded.user["id"] == "user-sim"
    system = loaded.system("sys-t1")
    assert system is not None
    assert system.types() == {"Switcher": 2}
    switcher = system.resolve("Switcher", 1)
    assert switcher is not None
    assert switcher.status == {"route": {"1": 2}}  # null statuses have no value
    assert switcher.methods["switch"].params == {"input": ["Int32"], "output": ["Int32", 1]}
    assert switcher.methods["secret"].params == {"a": ["JSON::Any"], "b": ["JSON::Any"]}
    assert switcher.methods["fixed"].returns == {"ok": True}
    assert switcher.methods["switch"].returns is UNSET
    assert repr(UNSET) == "UNSET"
    camera = system.resolve("Switcher", 2)
    assert camera is not None
    assert (camera.id, camera.running) == ("mod-Camera", False)
    assert Scenario.from_dict(loaded.to_dict()).to_dict() == loaded.to_dict()
    assert MethodSpec.from_dict(loaded.to_dict()["systems"][0]["modules"][0]["methods"]["broken"])
    assert Scenario.from_dict({}).systems == []


def test_method_spec_description_and_defaults() -> None:
    """describe() feeds the functions endpoint; to_dict omits defaults."""
    spec = MethodSpec.from_dict({"params": {"level": ["Int32", 50]}, "sets": "volume"})
    assert spec.describe() == {
        "arity": 1,
        "params": {"level": ["Int32", 50]},
        "order": ["level"],
    }
    assert spec.to_dict() == {"params": {"level": ["Int32", 50]}, "sets": "volume"}
    assert MethodSpec().to_dict() == {"params": {}}
    system = System(id="sys-x", name="X", modules=[Module(id="m1", name="A")])
    assert system.resolve("A", 1) is system.modules[0]
    system.modules.append(Module(id="m2", name="B", custom_name="A"))
    assert system.resolve("A", 2) is system.modules[1]  # noticed without reindex()
    system.modules[0].custom_name = "C"
    system.reindex()  # a rename in place needs it
    assert system.resolve("C", 1) is system.modules[0]
    scenario = Scenario(systems=[system])
    assert scenario.system("sys-x") is system
    system.id = "sys-renamed"
    assert scenario.system("sys-x") is None
    assert scenario.system("sys-renamed") is system
    scenario.systems.append(System(id="sys-renamed", name="duplicate"))
    assert scenario.system("sys-renamed") is system  # the first one wins


async def test_declarative_methods_over_the_socket(
    session: aiohttp.ClientSession, socket_enabled: None
) -> None:
    """sets/returns/raises/delay/privileged and a stopped module, from JSON."""
    sim = PlaceOSSimulator(Scenario.from_dict(SCENARIO_JSON), admin_keys=("admin",))
    await sim.start()
    try:
        raw = await connect(session, sim)
        base = {"sys": "sys-t1", "mod": "Switcher"}
        await raw.request("bind", 1, "route", **base)
        assert (await raw.recv_many(2))[1]["value"] == {"1": 2}
        await raw.request("exec", 2, "switch", args=[{"1": 3}], **base)
        notify, success = await raw.recv_many(2)
        assert notify["value"] == {"1": 3}
        assert success["value"] == {"1": 3}
        await raw.request("exec", 3, "fixed", **base)
        assert (await raw.recv())["value"] == {"ok": True}
        await raw.request("exec", 4, "broken", **base)
        broken = await raw.recv()
        assert (broken["error_code"], broken["msg"], broken["code"]) == (
            3,
            "module raised: device offline",
            503,
        )
        await raw.request("exec", 5, "slow", **base)
        assert (await raw.recv())["value"] == 42
        await raw.request("exec", 6, "secret", **base)
        assert (await raw.recv())["error_code"] == 2
        await raw.request("exec", 7, "anything", index=2, **base)
        assert (await raw.recv())["error_code"] == 1
        await raw.request("exec", 8, "switch", **base)  # no args: sets null = deletes
        notify, success = await raw.recv_many(2)
        assert notify["value"] is None
        assert success["value"] is None
        admin = await connect(session, sim, "admin")
        await admin.request("exec", 1, "secret", **base)
        assert (await admin.recv())["value"] is None
        await admin.close()
        await raw.close()
        # A method spec can be set directly too.
        sim.set_method("sys-t1", "Switcher", 1, "spec", MethodSpec(returns="via spec"))
        module = sim.scenario.module("sys-t1", "Switcher", 1)
        assert module is not None
        assert module.methods["spec"].returns == "via spec"
    finally:
        await sim.stop()


async def test_demo_display_methods(session: aiohttp.ClientSession, sim: PlaceOSSimulator) -> None:
    """The demo's methods set their statuses, so exec -> notify works."""
    raw = await connect(session, sim)
    calls = [
        ("Display", 2, "power", True, "power"),
        ("Display", 2, "input", "usb", "input"),
        ("Lighting", 1, "scene", "presentation", "scene"),
        ("Lighting", 1, "level", 10, "level"),
    ]
    for ident, (mod, index, method, value, status) in enumerate(calls, start=1):
        await raw.request("exec", ident, method, mod=mod, index=index, args=[value])
        reply = await raw.recv()
        assert (reply["id"], reply["value"]) == (ident, value)
        assert sim.get_status(SYS, mod, index, status) == value
    await raw.request("exec", 9, "refresh", mod="Bookings")
    assert (await raw.recv())["value"] == 2
    await raw.close()


async def test_activity_changes_occupancy(
    session: aiohttp.ClientSession, sim: PlaceOSSimulator
) -> None:
    """start_activity makes people_count wander and presence follow; stop ends it."""
    raw = await connect(session, sim)
    await raw.request("bind", 1, "people_count", sys="sys-room102", mod="Occupancy")
    _success, notify = await raw.recv_many(2)
    assert notify["value"] == 0
    sim.start_activity(0.01, seed=1)
    sim.start_activity(0.01, seed=2)  # restarting replaces the previous task
    changed = await raw.recv()
    assert changed["value"] == 1  # from 0 the only way is up
    assert sim.get_status("sys-room102", "Occupancy", 1, "presence") is True
    sim.stop_activity()
    await asyncio.sleep(0)
    await raw.close()


def test_activity_tick_stays_in_bounds() -> None:
    """Many ticks keep people_count within 0..capacity and presence consistent."""
    sim = PlaceOSSimulator()
    rng = random.Random(3)
    for _ in range(200):
        sim.activity_tick(rng)
        for system in sim.scenario.systems:
            for module in system.modules:
                count = module.status.get("people_count")
                if count is None:
                    continue
                assert 0 <= count <= (system.capacity or 20)
                assert module.status["presence"] is (count > 0)
    sim.activity_tick()  # default RNG
    demo = demo_data(now=0)
    assert demo["systems"][0]["modules"][1]["custom_name"] == "Display"
