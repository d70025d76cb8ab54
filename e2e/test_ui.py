"""The newcomer's story in the browser, step by step (each step builds on the one before).

Log in → add the PlaceOS integration → add a system with two bindings → see the entities →
a value changes in PlaceOS and the page follows → call placeos.exec from Developer tools.
HA's frontend is shadow DOM throughout; Playwright's role/text locators pierce open shadow
roots, so the locators below are what a user reads on screen.
"""

from __future__ import annotations

from collections.abc import Callable
import json
from pathlib import Path
import re

from conftest import HomeAssistant
from playwright.sync_api import Page, expect

SYSTEM_ID = "sys-room101"
SYSTEM_NAME = "Room 1.01 Boardroom"
BINDINGS = ("Display_1.power", "Display_1.volume")
Shot = Callable[[str], Path]


def see(page: Page, text: str, *, exact: bool = False) -> None:
    """Wait until `text` is on screen (dialog titles exist twice in HA's DOM: take the first)."""
    expect(page.get_by_text(text, exact=exact).first).to_be_visible()


def see_entity(page: Page, name: str, state: str) -> None:
    """Wait until the entity row `name` shows `state`, as a screen reader would read it.

    The row's state text sits in its light DOM and its name in its shadow root, so the
    accessibility view is the reliable way to read them together.
    """
    row = page.locator("hui-generic-entity-row").filter(has_text=name)
    expect(row).to_match_aria_snapshot(f"- text: {name} {state}")


def test_login(page: Page, ha: HomeAssistant, shot: Shot) -> None:
    """The dev user logs in on HA's login page."""
    page.goto(ha.url)
    page.get_by_role("textbox", name="Username").fill(ha.username)
    page.get_by_role("textbox", name="Password").fill(ha.password)
    shot("login")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Welcome Developer")).to_be_visible()
    see(page, "Settings", exact=True)  # the sidebar
    shot("logged-in")


def test_add_integration(page: Page, ha: HomeAssistant, shot: Shot) -> None:
    """Settings → Devices & services → Add integration → PlaceOS → URL, key → entry created."""
    page.goto(f"{ha.url}/config/integrations/dashboard")
    page.get_by_role("button", name="Add integration").click()
    page.get_by_label("Search for a brand name").fill("PlaceOS")
    shot("add-integration-search")
    page.get_by_text("PlaceOS", exact=True).click()
    see(page, "Connect to PlaceOS")
    page.get_by_role("textbox", name="URL").fill(ha.sim_url)
    page.get_by_role("textbox", name="API key").fill(ha.sim_key)
    page.get_by_role("switch", name="Verify TLS certificate").uncheck()
    shot("placeos-form")
    page.get_by_role("button", name="Submit").click()
    see(page, "Demo Building")
    shot("entry-created")
    page.get_by_role("button", name="Finish").click()


def test_add_system(page: Page, ha: HomeAssistant, shot: Shot) -> None:
    """On the entry: Add system → (empty search) → pick the system → pick two bindings."""
    page.goto(f"{ha.url}/config/integrations/integration/placeos")
    page.get_by_role("button", name="Add system").click()
    see(page, "Find a PlaceOS system")
    page.get_by_role("button", name="Submit").click()
    see(page, "Choose a system")
    page.get_by_role("combobox", name="System").click()
    page.get_by_role("option", name=re.compile(re.escape(SYSTEM_NAME))).click()
    shot("pick-system")
    page.get_by_role("button", name="Submit").click()
    see(page, "Choose status variables")
    for label in BINDINGS:
        page.get_by_role("button", name="Status variables").click()
        page.get_by_role("textbox", name="Search | Add custom item").fill(label)
        page.get_by_text(label, exact=True).click()
        expect(page.get_by_role("button", name=f"Remove {label}")).to_be_visible()
    shot("pick-bindings")
    page.get_by_role("button", name="Submit").click()
    see(page, SYSTEM_NAME)
    shot("system-added")
    page.get_by_role("button", name="Finish").click()


def test_entities_show_values(page: Page, ha: HomeAssistant, shot: Shot) -> None:
    """The system's device page lists both sensors with the values PlaceOS has."""
    page.goto(f"{ha.url}/config/devices/dashboard")
    page.get_by_text(SYSTEM_NAME).first.click()
    for label in BINDINGS:
        module, status = label.split(".")
        value = ha.placeos_status(SYSTEM_ID, module, status)
        see_entity(page, f"{module.replace('_', ' ')} {status}", json.dumps(value))
    shot("device-entities")


def test_value_change_reaches_page(page: Page, ha: HomeAssistant, shot: Shot) -> None:
    """PlaceOS changes the volume (placeos.exec over HA's REST API); the open page follows."""
    volume = (ha.placeos_status(SYSTEM_ID, "Display_1", "volume") + 17) % 100
    reply = ha.call(
        lambda api: api.request(
            "POST",
            "/api/services/placeos/exec?return_response",
            json_body={
                "sys": SYSTEM_ID,
                "mod": "Display",
                "index": 1,
                "name": "volume",
                "args": [volume],
            },
        )
    )
    assert reply["service_response"] == {"value": volume}
    assert ha.placeos_status(SYSTEM_ID, "Display_1", "volume") == volume
    see_entity(page, "Display 1 volume", str(volume))
    shot("value-updated")


def test_exec_from_developer_tools(page: Page, ha: HomeAssistant, shot: Shot) -> None:
    """Developer tools → Actions, YAML mode: placeos.exec runs and shows its response."""
    volume = (ha.placeos_status(SYSTEM_ID, "Display_1", "volume") + 23) % 100
    page.goto(f"{ha.url}/developer-tools/action")
    page.get_by_role("button", name="Go to YAML mode").click()
    page.get_by_role("textbox").first.click()
    page.keyboard.press("Control+A")
    # insert_text pastes in one go; typing line by line would pile up the editor's auto-indent.
    page.keyboard.insert_text(
        "action: placeos.exec\n"
        "data:\n"
        f"  sys: {SYSTEM_ID}\n"
        "  mod: Display\n"
        "  index: 1\n"
        "  name: volume\n"
        f"  args: [{volume}]\n"
    )
    shot("devtools-yaml")
    page.get_by_role("button", name="Perform action").click()
    see(page, f"value: {volume}")
    assert ha.placeos_status(SYSTEM_ID, "Display_1", "volume") == volume
    shot("devtools-response")


def test_log_has_no_integration_errors(ha: HomeAssistant) -> None:
    """Nothing above WARNING from the integration in HA's log during the whole story."""
    bad = [
        line
        for line in ha.log_lines()
        if re.search(r" (ERROR|CRITICAL) .*placeos", line, re.IGNORECASE)
    ]
    assert not bad, "\n".join(bad)
