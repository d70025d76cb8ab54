"""The PlaceOS discovery REST API (`/api/engine/v2`), used by the config flow."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
import logging
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDictProxy, MultiDictProxy
from yarl import URL

from .decode import decode_auto
from .errors import (
    PlaceOSAuthError,
    PlaceOSConnectionError,
    PlaceOSForbiddenError,
    PlaceOSTimeoutError,
    PlaceOSTLSError,
)
from .models import Authority, System, Zone, normalize_url

_LOGGER: Final = logging.getLogger(__name__)

API_PATH: Final = "/api/engine/v2"
PAGE_SIZE: Final = 100
# Hard cap on pages followed for one listing: a server that keeps offering a next page
# (or ignores `offset`) cannot keep a config flow busy forever.
MAX_PAGES: Final = 50

_Links = MultiDictProxy[MultiDictProxy[str | URL]]


def _segment(value: str) -> str:
    """One path segment, percent-encoded so an id cannot change the path."""
    return quote(value, safe="")


class PlaceOSApi:
    """Client of the discovery REST API; takes an aiohttp session from outside."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        api_key: str,
        *,
        verify_ssl: bool = True,
        timeout: float = 10.0,
    ) -> None:
        """`url` is the instance URL (`https://host[:port]`)."""
        self._session = session
        self._base = normalize_url(url)
        self._api_key = api_key
        self._ssl = verify_ssl
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"<PlaceOSApi {self._base}>"

    @property
    def url(self) -> str:
        """The instance's origin (never holds credentials)."""
        return str(self._base)

    # ------------------------------------------------------------------ endpoints

    async def authority(self) -> Authority:
        """The instance's identity; needs no credentials."""
        data = await self._get_json(self._base.with_path("/auth/authority"), auth=False)
        return self._model(Authority.from_dict, data, "authority")

    async def current_user(self) -> dict[str, Any]:
        """The key owner's user record; raises PlaceOSAuthError for a bad key."""
        return self._object(await self._get_json(self._api_url("users", "current")))

    async def systems(
        self, q: str | None = None, zone_id: str | None = None, limit: int | None = None
    ) -> list[System]:
        """Systems matching the prefix search `q` and zone, following pages.

        `limit` stops after that many systems; None means all (up to the page cap).
        """
        items = await self._get_list(self._api_url("systems"), {"q": q, "zone_id": zone_id}, limit)
        return self._models(System.from_dict, items, "system")

    async def system(self, sys_id: str) -> System:
        """One system with its modules (`complete=true`)."""
        data = await self._get_json(self._api_url("systems", sys_id), {"complete": "true"})
        return self._model(System.from_dict, data, "system")

    async def types(self, sys_id: str) -> dict[str, int]:
        """Module binding names and how many of each the system has."""
        data = self._object(await self._get_json(self._api_url("systems", sys_id, "types")))
        return {name: count for name, count in data.items() if type(count) is int}

    async def module_state(self, sys_id: str, mod: str, index: int) -> dict[str, Any]:
        """Every status of a module, values decoded from the stringified JSON sent here."""
        data = await self._get_json(self._api_url("systems", sys_id, f"{mod}_{index}"))
        return {name: decode_auto(value) for name, value in self._object(data).items()}

    async def status(self, sys_id: str, mod: str, index: int, name: str) -> Any:
        """One status value as the server parsed it; None when it has no value."""
        return await self._get_json(self._api_url("systems", sys_id, f"{mod}_{index}", name))

    async def functions(self, sys_id: str, mod: str, index: int) -> dict[str, Any]:
        """The module's callable methods: `{name: {arity, params, order}}`."""
        data = await self._get_json(self._api_url("systems", sys_id, "functions", f"{mod}_{index}"))
        return self._object(data)

    async def zones(self, q: str | None = None) -> list[Zone]:
        """Zones matching the prefix search `q`, following pages."""
        items = await self._get_list(self._api_url("zones"), {"q": q}, None)
        return self._models(Zone.from_dict, items, "zone")

    # ------------------------------------------------------------------ plumbing

    def _api_url(self, *segments: str) -> URL:
        path = "/".join(_segment(segment) for segment in segments)
        return self._base.with_path(f"{API_PATH}/{path}", encoded=True)

    @staticmethod
    def _object(data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise PlaceOSConnectionError("unexpected response: expected a JSON object")
        return data

    @staticmethod
    def _model[T](build: Callable[[Mapping[str, Any]], T], data: Any, what: str) -> T:
        try:
            return build(data)
        except (ValueError, TypeError, AttributeError) as err:
            raise PlaceOSConnectionError(f"unexpected {what} response: {err}") from None

    @staticmethod
    def _models[T](build: Callable[[Mapping[str, Any]], T], items: list[Any], what: str) -> list[T]:
        results: list[T] = []
        for item in items:
            try:
                results.append(build(item))
            except (ValueError, TypeError, AttributeError) as err:
                _LOGGER.debug("Skipping a malformed %s in a listing: %s", what, err)
        return results

    async def _get_list(
        self, url: URL, params: Mapping[str, str | None], limit: int | None
    ) -> list[Any]:
        """Collect a listing page by page.

        Follows `Link: <…>; rel="next"` when it points to this instance, else advances
        `offset` until `X-Total-Count` items arrived or a page comes back empty.
        """
        query = {key: value for key, value in params.items() if value is not None}
        page_size = PAGE_SIZE if limit is None else max(1, min(limit, PAGE_SIZE))
        query["limit"] = str(page_size)
        items: list[Any] = []
        next_url: URL | None = None
        for _page in range(MAX_PAGES):
            if next_url is not None:
                data, headers, links = await self._request(next_url, None, auth=True)
            else:
                page_query = {**query, "offset": str(len(items))}
                data, headers, links = await self._request(url, page_query, auth=True)
            if not isinstance(data, list):
                raise PlaceOSConnectionError(f"unexpected response from {url.path}: not a list")
            items.extend(data)
            if limit is not None and len(items) >= limit:
                return items[:limit]
            if not data:
                return items
            next_url = self._next_link(url, links)
            if next_url is None:
                total = headers.get("X-Total-Count", "")
                if total.isdigit():
                    if len(items) >= int(total):
                        return items
                elif len(data) < page_size:  # no count and a short page: the last one
                    return items
        _LOGGER.debug("Stopped listing %s after %d pages", url.path, MAX_PAGES)
        return items

    def _next_link(self, url: URL, links: _Links) -> URL | None:
        link = links.get("next")
        target = link.get("url") if link is not None else None
        if not isinstance(target, URL):
            return None
        resolved = url.join(target)
        # Never send the key to another host, whatever a header says.
        return resolved if resolved.origin() == self._base.origin() else None

    async def _get_json(
        self, url: URL, params: Mapping[str, str] | None = None, *, auth: bool = True
    ) -> Any:
        data, _headers, _links = await self._request(url, params, auth=auth)
        return data

    async def _request(
        self, url: URL, params: Mapping[str, str] | None, *, auth: bool
    ) -> tuple[Any, CIMultiDictProxy[str], _Links]:
        """GET a JSON document; map every failure to a PlaceOS error without the key."""
        headers = {"Accept": "application/json"}
        if auth:
            headers["X-API-Key"] = self._api_key
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._session.get(
                    url, params=params, headers=headers, ssl=self._ssl, allow_redirects=False
                ) as resp,
            ):
                status = resp.status
                if status == 401:
                    raise PlaceOSAuthError(f"{url.host} rejected the API key (HTTP 401)")
                if status == 403:
                    raise PlaceOSForbiddenError(
                        f"{url.host} refused access to {url.path} (HTTP 403)"
                    )
                if 300 <= status < 400:
                    location = resp.headers.get("Location", "?")
                    raise PlaceOSConnectionError(
                        f"{url.path} redirects to {location}: configure that URL instead",
                        status=status,
                    )
                if not 200 <= status < 300:
                    raise PlaceOSConnectionError(
                        f"GET {url.path} failed with HTTP {status}", status=status
                    )
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    raise PlaceOSConnectionError(
                        f"GET {url.path} did not return JSON", status=status
                    ) from None
                return data, resp.headers, resp.links
        except aiohttp.ClientSSLError as err:
            raise PlaceOSTLSError(f"TLS error connecting to {url.host}: {err}") from err
        except TimeoutError:
            raise PlaceOSTimeoutError(
                f"GET {url.path} got no answer within {self._timeout:g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as err:
            raise PlaceOSConnectionError(f"GET {url.path} failed: {err}") from err
