"""Home Assistant finds and loads the project's integration."""

from __future__ import annotations

import json
from pathlib import Path

from homeassistant.core import HomeAssistant
from homeassistant.loader import async_get_integration
from homeassistant.setup import async_setup_component

from custom_components.placeos.const import DOMAIN

ROOT = Path(__file__).parent.parent


async def test_integration_is_found_and_sets_up(hass: HomeAssistant) -> None:
    """HA loads `placeos` from this repository, not from the harness's own folder."""
    integration = await async_get_integration(hass, DOMAIN)
    assert integration.domain == DOMAIN
    assert Path(integration.file_path).resolve() == (ROOT / "custom_components/placeos").resolve()
    assert integration.config_flow is True
    assert await async_setup_component(hass, DOMAIN, {})


def test_manifest_and_hacs_metadata() -> None:
    """Manifest keys follow hassfest's order; hacs.json names a minimum HA version."""
    manifest = json.loads((ROOT / "custom_components/placeos/manifest.json").read_text())
    keys = list(manifest)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])
    assert manifest["iot_class"] == "cloud_push"
    assert manifest["integration_type"] == "hub"
    assert manifest["documentation"].startswith("https://")
    hacs = json.loads((ROOT / "hacs.json").read_text())
    assert set(hacs) <= {
        "name",
        "homeassistant",
        "render_readme",
        "content_in_root",
        "country",
        "filename",
        "hide_default_branch",
        "zip_release",
        "persistent_directory",
        "hacs",
    }
    assert hacs["name"] == "PlaceOS"
    assert hacs["homeassistant"].count(".") == 2
