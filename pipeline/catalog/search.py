"""Search a STAC API with pystac-client; return plain item dicts (picklable, provider-neutral).

Planetary Computer hrefs are signed with the `planetary-computer` package. Cloud-cover and MGRS filters are
sent to the server when it declares the `query` extension and are always re-checked here, so a server that
ignores them cannot let unwanted items through. Connection retries are logged as one short INFO line each
(shown with `difffusr --verbose`), not as urllib3's warnings with full exception reprs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.catalog.query import SearchQuery
from pipeline.errors import CatalogError, EmptySearchError

log = logging.getLogger(__name__)

#: Retries of a failed STAC request (connection errors, HTTP 5xx), with exponential backoff from 0.5 s.
RETRIES = 4
_QUERY_CONFORMANCE = "https://api.stacspec.org/v1.0.0-rc.1/item-search#query"


def _is_planetary_computer(url: str) -> bool:
    return "planetarycomputer.microsoft.com" in url


def item_mgrs_tile(item: dict[str, Any]) -> str | None:
    """The item's MGRS tile id ("32TNT") from any provider's property, or None."""
    props = item.get("properties", {})
    if props.get("s2:mgrs_tile"):
        return str(props["s2:mgrs_tile"]).removeprefix("T")
    if props.get("grid:code"):
        return str(props["grid:code"]).removeprefix("MGRS-")
    if (
        props.get("mgrs:utm_zone") is not None
        and props.get("mgrs:latitude_band")
        and props.get("mgrs:grid_square")
    ):
        return f"{int(props['mgrs:utm_zone']):02d}{props['mgrs:latitude_band']}{props['mgrs:grid_square']}"
    return None


def keep_item(item: dict[str, Any], query: SearchQuery) -> bool:
    """Client-side filter: cloud cover and MGRS tile. Pure."""
    props = item.get("properties", {})
    if query.max_cloud is not None:
        cloud = props.get("eo:cloud_cover")
        if cloud is not None and float(cloud) > query.max_cloud:
            return False
    if query.mgrs_tiles:
        tile = item_mgrs_tile(item)
        if tile is None or tile.zfill(5) not in query.mgrs_tiles:
            return False
    return True


def _why(exc: Exception) -> str:
    """One short reason for a failed search; a web page or non-JSON answer means the URL is no STAC API."""
    import json

    text = str(exc).strip()
    status = getattr(exc, "status_code", None)
    prefix = f"{type(exc).__name__}: " + (f"HTTP {status}, " if status else "")
    if text.startswith("<"):
        return (
            prefix + "the server answered with an HTML page, not STAC JSON (is this the STAC API's root URL?)"
        )
    if isinstance(exc, json.JSONDecodeError) or "JSONDecodeError" in type(exc).__name__:
        return prefix + "the server's answer is not JSON (is this the STAC API's root URL?)"
    if "Max retries exceeded" in text:  # urllib3's nested reprs: keep the innermost reason
        reason = re.search(r"\[Errno -?\d+\] [^\"')]+|Read timed out|timed out", text)
        return (
            f"cannot connect after {RETRIES} retries ({reason.group(0) if reason else 'connection failed'})"
        )
    return prefix + (text.splitlines()[0] if text else "")


class _ShortRetryLines(logging.Filter):
    """Turns urllib3's "Retrying (Retry(...)) after connection broken by 'NewConnectionError(...)'" warnings
    into one short INFO line of ours: the final CatalogError already says what failed and what to check."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            not str(record.msg).startswith("Retrying")
            or not isinstance(record.args, tuple)
            or len(record.args) < 3
        ):
            return True
        retry, err, url = record.args[:3]
        host = getattr(record, "__urllib3-retry-warning", {}).get("host", "")
        left = getattr(retry, "total", None)
        log.info(
            "STAC request to %s%s failed (%s); retrying%s",
            host,
            url,
            type(err).__name__,
            f", {left} retries left" if left is not None else "",
        )
        return False


@contextmanager
def _short_retry_lines() -> Iterator[None]:
    pool_log = logging.getLogger("urllib3.connectionpool")
    quiet = _ShortRetryLines()
    pool_log.addFilter(quiet)
    try:
        yield
    finally:
        pool_log.removeFilter(quiet)


def search_items(query: SearchQuery, *, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Run the search; items sorted by datetime then id.

    Raises:
        CatalogError: the API cannot be reached or answers with an error.
        EmptySearchError: nothing matched (the message repeats the query and suggests what to widen).
    """
    import pystac_client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3 import Retry

    modifier = None
    if _is_planetary_computer(query.stac_url):
        import planetary_computer

        modifier = planetary_computer.sign_inplace
    # Transient 5xx / connection errors are retried with backoff by urllib3.
    retry = Retry(
        total=RETRIES, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504], allowed_methods=None
    )
    stac_io = StacApiIO(max_retries=retry, timeout=timeout_s)
    with _short_retry_lines():
        try:
            client = pystac_client.Client.open(query.stac_url, modifier=modifier, stac_io=stac_io)
            kwargs: dict[str, Any] = {
                "collections": [query.collection],
                "bbox": list(query.bbox),
                "datetime": query.datetime_range,
                "max_items": query.max_items,
            }
            if query.max_cloud is not None and client.conforms_to("QUERY"):
                kwargs["query"] = {"eo:cloud_cover": {"lte": query.max_cloud}}
            found = [item.to_dict() for item in client.search(**kwargs).items()]
        except Exception as exc:  # noqa: BLE001 -- pystac-client raises APIError, requests errors, JSON errors ...
            raise CatalogError(
                f"STAC search at {query.stac_url!r} (collection {query.collection!r}) failed: {_why(exc)}; "
                "check --stac-url and --collection"
            ) from None
    items = sorted(
        (i for i in found if keep_item(i, query)),
        key=lambda i: (i["properties"].get("datetime") or "", i["id"]),
    )
    if not items:
        cloud = f", cloud cover <= {query.max_cloud}%" if query.max_cloud is not None else ""
        tiles = f", MGRS {','.join(query.mgrs_tiles)}" if query.mgrs_tiles else ""
        raise EmptySearchError(
            f"no {query.collection!r} item at {query.stac_url} intersects bbox "
            f"{','.join(f'{v:g}' for v in query.bbox)} "
            f"in {query.datetime_range}{cloud}{tiles} ({len(found)} before client-side filters); "
            "widen --datetime or --bbox, or raise --max-cloud"
        )
    log.info("search: %d items (%d before filters)", len(items), len(found))
    return items
