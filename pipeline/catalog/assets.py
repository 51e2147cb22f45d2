"""Map each provider's asset keys to canonical band ids (B01 ... B12, B8A, SCL). Pure: works on item dicts.

Providers seen in the wild:
- Earth Search v1: common names (`coastal`, `blue`, ..., `nir08`, `swir22`, `scl`), plus `-jp2` twins.
- Earth Search v0 and Planetary Computer: band ids (`B02`, `B8A`, `SCL`).
- CDSE STAC v1: band id + resolution (`B02_10m`, `B02_20m`, `SCL_20m`): the native resolution is chosen.
- stactools / others: band ids or common names, recognised through `eo:bands` / `bands` metadata too.
"""

from __future__ import annotations

from typing import Any

from pipeline.bands import NATIVE_GSD_M, S2_BANDS
from pipeline.errors import AssetError

SCL = "SCL"

#: Earth Search v1 key -> band id.
EARTH_SEARCH_V1_KEYS: dict[str, str] = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "swir16": "B11",
    "swir22": "B12",
    "scl": SCL,
}


def _candidate_keys(band: str) -> list[str]:
    """Asset keys that hold `band`, most preferred first (native-resolution variants first)."""
    keys = [band, band.lower()]
    gsd = 20 if band == SCL else NATIVE_GSD_M[band]
    keys += [f"{band}_{gsd}m", f"{band}_{gsd}M"]
    keys += [k for k, b in EARTH_SEARCH_V1_KEYS.items() if b == band]
    return keys


def _band_names_in_metadata(asset: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for entry in (asset.get("eo:bands") or []) + (asset.get("bands") or []):
        if isinstance(entry, dict) and entry.get("name"):
            names.add(str(entry["name"]).upper())
    return names


def map_band_assets(
    item: dict[str, Any], bands: tuple[str, ...] = S2_BANDS, *, with_scl: bool = True
) -> dict[str, str]:
    """Return {band id: asset key} for one STAC item dict.

    Args:
        item: a STAC item as a dict (pystac `Item.to_dict()` or raw JSON).
        bands: band ids that must be present.
        with_scl: also look for the scene classification; it is optional (absent -> no "SCL" entry).

    Raises:
        AssetError: a required band has no asset; the message lists the item id and its asset keys.
    """
    assets: dict[str, Any] = item.get("assets", {})
    mapping: dict[str, str] = {}
    wanted = list(bands) + ([SCL] if with_scl else [])
    for band in wanted:
        key = next((k for k in _candidate_keys(band) if k in assets), None)
        if key is None and band != SCL:
            # Last resort: an asset whose eo:bands name is the band id and which holds only that band.
            key = next(
                (
                    k
                    for k, a in assets.items()
                    if not k.endswith("-jp2") and _band_names_in_metadata(a) == {band}
                ),
                None,
            )
        if key is not None:
            mapping[band] = key
        elif band != SCL:
            raise AssetError(
                f"item {item.get('id')!r} has no asset for band {band} "
                f"(asset keys: {', '.join(sorted(assets))}); "
                "the collection may not be Sentinel-2 L2A - check --collection, or the band list"
            )
    return mapping


def asset_href(item: dict[str, Any], key: str) -> str:
    """The href of an asset; raises AssetError when it is missing or empty."""
    href = item.get("assets", {}).get(key, {}).get("href")
    if not href:
        raise AssetError(f"item {item.get('id')!r}: asset {key!r} has no href")
    return str(href)
