"""Fixtures of the browser test: a running HA (started by scripts/e2e), the dev user, Chromium.

scripts/e2e starts `scripts/develop` and passes where things are through the environment:
E2E_HA_URL, E2E_SIM_URL, E2E_SIM_KEY, E2E_HA_CONFIG (HA's config dir, for its log) and
E2E_ARTIFACTS (screenshots). The Home Assistant pytest plugin is not loaded here (plugin
autoload is off): it would block sockets and expects a `hass` fixture of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
import itertools
import json
import os
from pathlib import Path
import re
import sys
from typing import Any
import urllib.request

import aiohttp
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "develop"))

import bootstrap  # noqa: E402 (lives in develop/, put on sys.path just above)

CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
# The machine has no internet: without these Chromium keeps trying to reach Google services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STEP_TIMEOUT_MS = 30_000
expect.set_options(timeout=STEP_TIMEOUT_MS)


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set; run this through scripts/e2e", returncode=2)
    return value


def _run_async(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion in a thread of its own.

    Playwright's sync API keeps an event loop running in the main thread, so asyncio.run()
    cannot be used there.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro_fn()).result()


class HomeAssistant:
    """The HA instance under test: URLs, the dev login, REST calls with the dev user's token."""

    def __init__(self) -> None:
        """Read the environment scripts/e2e set."""
        self.url = _env("E2E_HA_URL").rstrip("/")
        self.sim_url = _env("E2E_SIM_URL")
        self.sim_key = _env("E2E_SIM_KEY")
        self.config_dir = Path(_env("E2E_HA_CONFIG"))
        self.username = bootstrap.DEV_USERNAME
        self.password = bootstrap.DEV_PASSWORD
        self._tokens: tuple[str | None, str | None] = (None, None)

    def onboard(self) -> None:
        """Onboard HA with the dev user (no browser needed for that part) and keep its token."""

        async def go() -> None:
            async with aiohttp.ClientSession() as session:
                api = bootstrap.HomeAssistantApi(session, self.url)
                async with asyncio.timeout(60):
                    await bootstrap.onboard(api, self.username, self.password)
                    await api.wait_running()
                self._tokens = (api.token, api.refresh_token)

        _run_async(go)

    def call(self, coro_fn: Callable[[bootstrap.HomeAssistantApi], Any]) -> Any:
        """Run `coro_fn(api)` with an authenticated API client and return its result."""

        async def go() -> Any:
            async with aiohttp.ClientSession() as session:
                api = bootstrap.HomeAssistantApi(session, self.url)
                api.token, api.refresh_token = self._tokens
                async with asyncio.timeout(30):
                    return await coro_fn(api)

        return _run_async(go)

    def placeos_status(self, sys_id: str, module: str, status: str) -> Any:
        """A status value as PlaceOS itself (the simulator) reports it, e.g. Display_1 volume."""
        request = urllib.request.Request(
            f"{self.sim_url}/api/engine/v2/systems/{sys_id}/{module}/{status}",
            headers={"X-API-Key": self.sim_key, "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def log_lines(self) -> list[str]:
        """HA's log file, line by line."""
        path = self.config_dir / "home-assistant.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []


@pytest.fixture(scope="session")
def ha() -> HomeAssistant:
    """The running, onboarded HA."""
    instance = HomeAssistant()
    instance.onboard()
    return instance


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where the screenshots go."""
    path = Path(_env("E2E_ARTIFACTS"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver (no browser download: Debian's Chromium is used)."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless Chromium."""
    instance = playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )
    yield instance
    instance.close()


@pytest.fixture(scope="session")
def page(browser: Browser) -> Iterator[Page]:
    """One tab for the whole story: the steps build on each other (login, entry, system)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.set_default_timeout(STEP_TIMEOUT_MS)
    # Only HA itself: brand icons and the like come from the internet, which is not there.
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
    tab = context.new_page()
    yield tab
    context.close()


_shot_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def shot(page: Page, artifacts: Path) -> Callable[[str], Path]:
    """`shot("login")` saves artifacts/e2e/NN-login.png of the current page."""

    def take(name: str) -> Path:
        path = artifacts / f"{next(_shot_numbers):02d}-{re.sub(r'[^a-z0-9]+', '-', name)}.png"
        page.screenshot(path=path)
        return path

    return take


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's outcome on the test item (for the failure screenshot)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def screenshot_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """A failed step leaves a screenshot of what the browser showed."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and "page" in request.fixturenames:
        shot: Callable[[str], Path] = request.getfixturevalue("shot")
        print(f"screenshot of the failure: {shot(request.node.name + '-failed')}")
