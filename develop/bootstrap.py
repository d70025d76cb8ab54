"""Drive a freshly started Home Assistant through its HTTP API (used by scripts/develop and e2e).

    python develop/bootstrap.py wait    --url http://127.0.0.1:8123 [--timeout 180] [--pid PID]
    python develop/bootstrap.py onboarded --url URL
    python develop/bootstrap.py onboard --url URL [--token-file FILE]
    python develop/bootstrap.py demo    --url URL --placeos-url http://127.0.0.1:8081 --api-key KEY

- `wait`: until HA's HTTP server answers (exit 1 on timeout, 2 when process PID died).
- `onboarded`: exit 0 when HA has its first user (onboarding's user step), 3 when not.
- `onboard`: finish onboarding with the dev user (user → auth code → token, core config,
  analytics, integration); when HA is onboarded already, log the dev user in instead. With
  `--token-file`, writes `{"access_token": …, "refresh_token": …}` there (mode 0600).
- `demo`: `onboard`, then add the PlaceOS config entry through the config flow REST API and one
  "system" subentry with a few bindings through the subentry flow REST API, unless present.

Standard library and aiohttp only (both are in the venv through Home Assistant).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
import json
import os
from pathlib import Path
import sys
from typing import Any

import aiohttp

DEV_NAME = "Developer"
DEV_USERNAME = "dev"
DEV_PASSWORD = "placeos-dev"  # a throwaway login of a local dev instance
DEMO_SYSTEM = "sys-room101"
DEMO_BINDINGS = (
    "Display_1.power",
    "Display_1.volume",
    "Display_1.input",
    "Lighting_1.level",
    "Lighting_1.scene",
    "Occupancy_1.people_count",
    "Bookings_1.bookings",
)
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)


class BootstrapError(Exception):
    """A step did not go as expected; the message says which."""


class NotOnboardedError(Exception):
    """HA still shows its onboarding (exit status 3 of `onboarded`)."""


def say(message: str) -> None:
    """Progress for the terminal (stderr, so stdout stays machine-readable)."""
    print(f"\033[1m[bootstrap]\033[0m {message}", file=sys.stderr, flush=True)


class HomeAssistantApi:
    """The few REST calls the bootstrap needs, with or without a bearer token."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        """Talk to the HA instance at `url` (e.g. http://127.0.0.1:8123)."""
        self.session = session
        self.url = url.rstrip("/")
        self.token: str | None = None
        self.refresh_token: str | None = None

    @property
    def client_id(self) -> str:
        """The frontend's client id: HA's own base URL."""
        return f"{self.url}/"

    @property
    def redirect_uri(self) -> str:
        """Where the frontend would be sent after login."""
        return f"{self.url}/?auth_callback=1"

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: dict[str, str] | None = None,
        expect: Sequence[int] = (200,),
    ) -> Any:
        """One request; returns the decoded JSON body (or None when empty)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method,
            f"{self.url}{path}",
            json=json_body,
            data=form,
            headers=headers,
            timeout=REQUEST_TIMEOUT,
        ) as response:
            text = await response.text()
            if response.status not in expect:
                raise BootstrapError(f"{method} {path}: HTTP {response.status}: {text[:300]}")
            return json.loads(text) if text else None

    async def onboarding_status(self) -> dict[str, bool] | None:
        """Which onboarding steps are done; None once HA is fully onboarded (view gone)."""
        async with self.session.get(
            f"{self.url}/api/onboarding", timeout=REQUEST_TIMEOUT
        ) as response:
            if response.status == 404:
                return None
            response.raise_for_status()
            steps: list[dict[str, Any]] = await response.json()
        return {step["step"]: bool(step["done"]) for step in steps}

    async def exchange_code(self, code: str) -> None:
        """Trade an authorization code for tokens."""
        tokens = await self.request(
            "POST",
            "/auth/token",
            form={"grant_type": "authorization_code", "code": code, "client_id": self.client_id},
        )
        self.token = tokens["access_token"]
        self.refresh_token = tokens["refresh_token"]

    async def login(self, username: str, password: str) -> None:
        """Log in through the login flow, as the login page does."""
        flow = await self.request(
            "POST",
            "/auth/login_flow",
            json_body={
                "client_id": self.client_id,
                "handler": ["homeassistant", None],
                "redirect_uri": self.redirect_uri,
            },
        )
        result = await self.request(
            "POST",
            f"/auth/login_flow/{flow['flow_id']}",
            json_body={"username": username, "password": password, "client_id": self.client_id},
        )
        if result.get("type") != "create_entry":
            raise BootstrapError(f"login of user {username!r} failed: {result.get('errors')}")
        await self.exchange_code(result["result"])

    async def wait_running(self) -> None:
        """Until HA reports state RUNNING (all integrations set up); bound it from outside."""
        while True:
            if (await self.request("GET", "/api/config")).get("state") == "RUNNING":
                return
            await asyncio.sleep(0.5)


async def wait_http(url: str, pid: int | None) -> None:
    """Until HA's HTTP server answers; ProcessLookupError when `pid` died. Bound it outside."""
    async with aiohttp.ClientSession() as session:
        while True:
            if pid is not None and not _alive(pid):
                raise ProcessLookupError(pid)
            try:
                # 200 before onboarding, 404 after: either way the server is up.
                async with session.get(
                    f"{url.rstrip('/')}/api/onboarding", timeout=aiohttp.ClientTimeout(total=5)
                ) as response:
                    if response.status in (200, 404):
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def onboard(
    api: HomeAssistantApi, username: str = DEV_USERNAME, password: str = DEV_PASSWORD
) -> None:
    """Finish onboarding with the dev user, or log it in when onboarding is done already."""
    status = await api.onboarding_status()
    if status is not None and not status.get("user", False):
        say(f"onboarding: creating user {username!r}")
        reply = await api.request(
            "POST",
            "/api/onboarding/users",
            json_body={
                "client_id": api.client_id,
                "name": DEV_NAME,
                "username": username,
                "password": password,
                "language": "en",
            },
        )
        await api.exchange_code(reply["auth_code"])
    else:
        await api.login(username, password)
    if status is None:
        return
    # Each step answers 403 when it was done already (e.g. a run interrupted half-way).
    done_or_forbidden = (200, 403)
    if not status.get("core_config", False):
        await api.request("POST", "/api/onboarding/core_config", expect=done_or_forbidden)
    if not status.get("analytics", False):
        await api.request("POST", "/api/onboarding/analytics", expect=done_or_forbidden)
    if not status.get("integration", False):
        await api.request(
            "POST",
            "/api/onboarding/integration",
            json_body={"client_id": api.client_id, "redirect_uri": api.redirect_uri},
            expect=done_or_forbidden,
        )
    say("onboarding: done")


async def flow_step(api: HomeAssistantApi, path: str, user_input: dict[str, Any]) -> Any:
    """Submit one step of a data entry flow; errors shown on a form become a BootstrapError."""
    result = await api.request("POST", path, json_body=user_input)
    if result.get("type") == "form" and result.get("errors"):
        raise BootstrapError(f"step {result.get('step_id')}: errors {result['errors']}")
    if result.get("type") == "abort":
        raise BootstrapError(f"flow aborted: {result.get('reason')}")
    return result


async def placeos_entries(api: HomeAssistantApi) -> list[dict[str, Any]]:
    """The PlaceOS config entries."""
    entries: list[dict[str, Any]] = await api.request(
        "GET", "/api/config/config_entries/entry?domain=placeos"
    )
    return entries


async def add_placeos_entry(api: HomeAssistantApi, placeos_url: str, api_key: str) -> str:
    """The entry id of the PlaceOS entry, created through the config flow when absent."""
    if entries := await placeos_entries(api):
        say(f"PlaceOS entry exists already: {entries[0]['title']}")
        entry_id: str = entries[0]["entry_id"]
        return entry_id
    flow = await api.request(
        "POST", "/api/config/config_entries/flow", json_body={"handler": "placeos"}
    )
    result = await flow_step(
        api,
        f"/api/config/config_entries/flow/{flow['flow_id']}",
        {"url": placeos_url, "api_key": api_key, "verify_ssl": False},
    )
    if result.get("type") != "create_entry":
        raise BootstrapError(f"config flow ended with {result.get('type')}: {result}")
    say(f"PlaceOS entry created: {result['title']}")
    created_id: str = result["result"]["entry_id"]
    return created_id


async def wait_entry_loaded(api: HomeAssistantApi, entry_id: str) -> None:
    """Until the entry's state is `loaded`; bound it from outside."""
    while True:
        states = {entry["entry_id"]: entry["state"] for entry in await placeos_entries(api)}
        if states.get(entry_id) == "loaded":
            return
        await asyncio.sleep(0.5)


async def add_system(
    api: HomeAssistantApi, entry_id: str, sys_id: str, bindings: Sequence[str]
) -> None:
    """Add one "system" subentry with `bindings`, unless the entry has subentries already."""
    entry = next(e for e in await placeos_entries(api) if e["entry_id"] == entry_id)
    if entry.get("num_subentries", 0):
        say(f"PlaceOS entry has {entry['num_subentries']} system(s) already")
        return
    base = "/api/config/config_entries/subentries/flow"
    flow = await api.request("POST", base, json_body={"handler": [entry_id, "system"]})
    path = f"{base}/{flow['flow_id']}"
    result = await flow_step(api, path, {"search": ""})
    if result.get("step_id") != "pick_system":
        raise BootstrapError(f"expected the pick_system step, got {result}")
    result = await flow_step(api, path, {"system": sys_id})
    result = await flow_step(api, path, {"bindings": list(bindings)})
    if result.get("type") != "create_entry":
        raise BootstrapError(f"subentry flow ended with {result.get('type')}: {result}")
    say(f"system {sys_id} added with {len(bindings)} bindings")


async def placeos_states(api: HomeAssistantApi) -> list[dict[str, Any]]:
    """States of the entities of the PlaceOS integration."""
    states: list[dict[str, Any]] = await api.request("GET", "/api/states")
    entity_ids = {
        entity["entity_id"]
        for entity in await _ws_call(api, {"type": "config/entity_registry/list"})
        if entity.get("platform") == "placeos"
    }
    return [state for state in states if state["entity_id"] in entity_ids]


async def _ws_call(api: HomeAssistantApi, message: dict[str, Any]) -> Any:
    """One command over HA's WebSocket API."""
    async with (
        asyncio.timeout(30),
        api.session.ws_connect(f"{api.url}/api/websocket") as ws,
    ):
        await ws.receive_json()  # auth_required
        await ws.send_json({"type": "auth", "access_token": api.token})
        auth = await ws.receive_json()
        if auth.get("type") != "auth_ok":
            raise BootstrapError(f"WebSocket auth failed: {auth}")
        await ws.send_json({"id": 1, **message})
        reply = await ws.receive_json()
        if not reply.get("success"):
            raise BootstrapError(f"{message['type']} failed: {reply.get('error')}")
        return reply["result"]


def write_tokens(api: HomeAssistantApi, path: Path) -> None:
    """Store the tokens for other tools (the e2e test), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"access_token": api.token, "refresh_token": api.refresh_token}, handle)


async def run(args: argparse.Namespace) -> None:
    """Carry out the sub-command."""
    if args.command == "wait":
        async with _limit(args.timeout, f"no answer from {args.url}"):
            await wait_http(args.url, args.pid)
        return
    async with aiohttp.ClientSession() as session:
        api = HomeAssistantApi(session, args.url)
        if args.command == "onboarded":
            status = await api.onboarding_status()
            if status is not None and not status.get("user", False):
                raise NotOnboardedError
            return
        await onboard(api, args.username, args.password)
        if args.token_file:
            write_tokens(api, Path(args.token_file))
        if args.command != "demo":
            return
        async with _limit(args.timeout, "Home Assistant did not finish starting"):
            await api.wait_running()
        entry_id = await add_placeos_entry(api, args.placeos_url, args.api_key)
        async with _limit(args.timeout, "the PlaceOS entry did not load"):
            await wait_entry_loaded(api, entry_id)
        await add_system(api, entry_id, args.system, args.bindings.split(","))
        await asyncio.sleep(1)  # let the first notifies arrive before listing the states
        for state in await placeos_states(api):
            value = state["state"]
            say(f"  {state['entity_id']} = {value[:60]}{'…' if len(value) > 60 else ''}")


@asynccontextmanager
async def _limit(seconds: float, what: str) -> AsyncIterator[None]:
    """A time limit whose expiry reads as a BootstrapError saying what did not happen."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as err:
        raise BootstrapError(f"{what} within {seconds:.0f} s") from err


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    wait = commands.add_parser("wait", help="wait until HA's HTTP server answers")
    onboarded = commands.add_parser("onboarded", help="exit 0 when HA has a user, 3 when not")
    onboard_cmd = commands.add_parser("onboard", help="onboard HA with the dev user")
    demo = commands.add_parser("demo", help="onboard, then add the PlaceOS entry and a system")
    for command in (wait, onboarded, onboard_cmd, demo):
        command.add_argument("--url", required=True, help="HA base URL")
        command.add_argument("--timeout", type=float, default=180.0, help="seconds per wait")
    wait.add_argument("--pid", type=int, help="give up when this process (hass) exits")
    for command in (onboard_cmd, demo):
        command.add_argument("--username", default=DEV_USERNAME)
        command.add_argument("--password", default=DEV_PASSWORD)
        command.add_argument("--token-file", help="write the access/refresh tokens here")
    demo.add_argument("--placeos-url", required=True, help="PlaceOS (or simulator) URL")
    demo.add_argument("--api-key", required=True, help="PlaceOS API key")
    demo.add_argument("--system", default=DEMO_SYSTEM, help="PlaceOS system id to add")
    demo.add_argument(
        "--bindings", default=",".join(DEMO_BINDINGS), help="comma-separated, e.g. Display_1.power"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit 0 on success, 1 on failure, 2 when the watched process died."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(run(args))
    except ProcessLookupError:
        say("Home Assistant exited")
        return 2
    except NotOnboardedError:
        return 3
    except (BootstrapError, aiohttp.ClientError, TimeoutError) as err:
        say(f"failed: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
