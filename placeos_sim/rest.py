"""Discovery REST API of the simulator (protocol notes §5), served from the scenario data.

Same credentials as the WebSocket (``X-API-Key`` header first, then the other paths), same 401
(JSON ``{"error": …}``) / 403 (empty body). Lists take ``q`` (case-insensitive substring of the
name, which includes prefixes; ``*`` wildcards are ignored), ``limit`` (default 100), ``offset``,
return a bare JSON array and page with ``X-Total-Count`` and ``Link: <…>; rel="next"``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
import json
import re
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

from aiohttp import web

if TYPE_CHECKING:
    from .scenario import Module, System
    from .server import ApiKey, PlaceOSSimulator

API_PREFIX: Final = "/api/engine/v2"
DEFAULT_LIMIT: Final = 100
_SLUG = re.compile(r"^(?P<mod>.+)_(?P<index>\d+)$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_rest_routes(app: web.Application, sim: PlaceOSSimulator) -> None:
    """Register the discovery endpoints for ``sim`` on ``app``."""
    api = _RestApi(sim)
    router = app.router
    router.add_get("/auth/authority", api.authority)
    router.add_get(f"{API_PREFIX}/users/current", api.guard(api.current_user))
    router.add_get(f"{API_PREFIX}/systems", api.guard(api.systems))
    # Literal segments first: aiohttp matches in registration order.
    router.add_get(f"{API_PREFIX}/systems/{{sys}}/types", api.guard(api.types))
    router.add_get(f"{API_PREFIX}/systems/{{sys}}/functions/{{slug}}", api.guard(api.functions))
    router.add_get(f"{API_PREFIX}/systems/{{sys}}/{{slug}}/{{status}}", api.guard(api.status))
    router.add_get(f"{API_PREFIX}/systems/{{sys}}/{{slug}}", api.guard(api.module_state))
    router.add_get(f"{API_PREFIX}/systems/{{sys}}", api.guard(api.system))
    router.add_get(f"{API_PREFIX}/zones", api.guard(api.zones))
    router.add_get(f"{API_PREFIX}/zones/{{zone}}", api.guard(api.zone))


def _not_found(message: str) -> web.Response:
    return web.json_response({"error": message}, status=404)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _matches(query: str, *fields: str | None) -> bool:
    return any(query in field.lower() for field in fields if field)


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw)  # ValueError -> 400 in the caller
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


def _page(request: web.Request, items: Sequence[dict[str, Any]]) -> web.Response:
    try:
        limit = _int_param(request, "limit", DEFAULT_LIMIT)
        offset = _int_param(request, "offset", 0)
    except ValueError as err:
        return _bad_request(str(err))
    total = len(items)
    headers = {"X-Total-Count": str(total)}
    following = offset + limit
    if limit and following < total:
        query = dict(request.query)
        query["limit"] = str(limit)
        query["offset"] = str(following)
        headers["Link"] = f'<{request.path}?{urlencode(query)}>; rel="next"'
    return web.json_response(list(items[offset:following]), headers=headers)


class _RestApi:
    def __init__(self, sim: PlaceOSSimulator) -> None:
        self.sim = sim

    def guard(self, handler: Callable[[web.Request, ApiKey], Awaitable[web.Response]]) -> Handler:
        """Authenticate, then call ``handler(request, key)``."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            self.sim.rest_requests += 1
            key = self.sim.authenticate(request)
            if isinstance(key, web.Response):
                return key
            return await handler(request, key)

        return guarded

    def _module(self, request: web.Request) -> tuple[System, Module] | web.Response:
        system = self.sim.scenario.system(request.match_info["sys"])
        if system is None:
            return _not_found("system not found")
        slug = request.match_info["slug"]
        match = _SLUG.match(slug)
        mod, index = (match["mod"], int(match["index"])) if match else (slug, 1)
        module = system.resolve(mod, index)
        if module is None:
            return _not_found(f"module {slug} not found in {system.id}")
        return system, module

    async def authority(self, request: web.Request) -> web.StreamResponse:
        """``GET /auth/authority`` (no credentials needed)."""
        self.sim.rest_requests += 1
        denied = self.sim.check_domain(request)
        if denied is not None:
            return denied
        authority = self.sim.scenario.authority
        body = {
            "id": authority.get("id"),
            "name": authority.get("name"),
            "description": authority.get("description", ""),
            "domain": authority.get("domain"),
            "login_url": "/login?continue={{url}}",
            "logout_url": "/auth/logout",
            "production": bool(authority.get("production", False)),
            "config": authority.get("config", {}),
            "version": authority.get("version", "3.12.0"),
        }
        return web.json_response(body)

    async def current_user(self, request: web.Request, key: ApiKey) -> web.Response:
        """``GET /users/current``: the key owner's user record."""
        user = dict(self.sim.scenario.user)
        user.setdefault("authority_id", self.sim.scenario.authority.get("id"))
        user["sys_admin"] = key.admin
        user["support"] = key.admin
        user.setdefault("groups", [])
        return web.json_response(user)

    async def systems(self, request: web.Request, key: ApiKey) -> web.Response:
        """``GET /systems?q=&zone_id=&limit=&offset=``."""
        query = request.query.get("q", "").replace("*", "").strip().lower()
        zone_id = request.query.get("zone_id")
        found = [
            system.to_api()
            for system in self.sim.scenario.systems
            if (not query or _matches(query, system.name, system.display_name))
            and (not zone_id or zone_id in system.zones)
        ]
        return _page(request, found)

    async def system(self, request: web.Request, key: ApiKey) -> web.Response:
        """``GET /systems/{sys}`` (with ``module_data``/``zone_data`` when ``complete``)."""
        system = self.sim.scenario.system(request.match_info["sys"])
        if system is None:
            return _not_found("system not found")
        body = system.to_api()
        if request.query.get("complete", "").lower() in ("true", "1"):
            body["module_data"] = [module.module_data(system.id) for module in system.modules]
            zones = {zone.id: zone for zone in self.sim.scenario.zones}
            body["zone_data"] = [zones[z].to_api() for z in system.zones if z in zones]
        return web.json_response(body)

    async def types(self, request: web.Request, key: ApiKey) -> web.Response:
        """``GET /systems/{sys}/types``: module binding name -> count."""
        system = self.sim.scenario.system(request.match_info["sys"])
        if system is None:
            return _not_found("system not found")
        return web.json_response(system.types())

    async def module_state(self, request: web.Request, key: ApiKey) -> web.Response:
        """``GET /systems/{sys}/{Mod}_{idx}``: every status, values stringified JSON."""
        found = self._module(request)
        if isinstance(found, web.Response):
            return found
        _system, module = found
        state = {name: json.dumps(value) for name, value in module.status.items()}
        return web.json_response(state)

    async def status(self, request: web.Request, key: ApiKey) -> web.Response:
        """``GET /systems/{sys}/{Mod}_{idx}/{status}``: the value, or null."""
        found = self._module(request)
        if isinstance(found, web.Response):
            return found
        _system, module = found
        return web.json_response(module.status.get(request.match_info["status"]))

    async def functions(self, request: web.Request, key: ApiKey) -> web.Response:
        """``GET /systems/{sys}/functions/{Mod}_{idx}``: the methods this key may call."""
        found = self._module(request)
        if isinstance(found, web.Response):
            return found
        _system, module = found
        return web.json_response(
            {
                name: spec.describe()
                for name, spec in module.methods.items()
                if key.admin or not spec.privileged
            }
        )

    async def zones(self, request: web.Request, key: ApiKey) -> web.Response:
        """``GET /zones?q=&tags=&parent_id=&limit=&offset=``."""
        query = request.query.get("q", "").replace("*", "").strip().lower()
        tags = {t for t in request.query.get("tags", "").split(",") if t}
        parent_id = request.query.get("parent_id")
        found = [
            zone.to_api()
            for zone in self.sim.scenario.zones
            if (not query or _matches(query, zone.name))
            and (not tags or tags & set(zone.tags))
            and (not parent_id or zone.parent_id == parent_id)
        ]
        return _page(request, found)

    async def zone(self, request: web.Request, key: ApiKey) -> web.Response:
        """``GET /zones/{zone}``."""
        for zone in self.sim.scenario.zones:
            if zone.id == request.match_info["zone"]:
                return web.json_response(zone.to_api())
        return _not_found("zone not found")
