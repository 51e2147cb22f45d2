"""Read one tile window of every item with odc-stac and turn it into composited reflectance.

Each band group is read on its own native grid (10, 20, 60 m) for the tile's window, one time slice per item
(`groupby="id"`), so every item keeps its own scale/offset. SCL, when the item has it, masks clouds, shadows
and defective pixels; DN 0 is nodata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.bands import BAND_GROUPS
from pipeline.catalog.assets import SCL, asset_href, map_band_assets
from pipeline.catalog.radiometry import resolve_radiometry, to_reflectance
from pipeline.errors import AssetError
from pipeline.ingest.composite import median_composite, scl_valid_20m, valid_at_factor
from pipeline.io.grid import SceneGrid
from pipeline.tiling.grid import TileKey, TileLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TileData:
    """Composited reflectance of one tile window (NaN = no valid observation).

    Attributes:
        b10, b20, b60: (4,W,W), (6,W/2,W/2), (2,W/6,W/6) float32, W = the layout's window.
        observations: per-item count of valid 10 m pixels that went into the composite.
    """

    b10: np.ndarray
    b20: np.ndarray
    b60: np.ndarray
    observations: dict[str, int]

    @property
    def empty(self) -> bool:
        return not np.isfinite(self.b10).any()


class UnreadableAssetError(AssetError):
    """An asset of one item cannot be read; `item_id` names the granule."""

    def __init__(self, message: str, item_id: str | None = None) -> None:
        super().__init__(message)
        self.item_id = item_id

    def __reduce__(self):  # keep item_id across Ray's pickling of task errors
        return (type(self), (str(self), self.item_id))


def _find_unreadable(items: list[dict[str, Any]], keys: list[str]) -> tuple[str | None, str]:
    """(item id, description) of the first asset rasterio cannot read, for the error message."""
    import rasterio

    for item in items:
        for key in keys:
            href = asset_href(item, key)
            try:
                with rasterio.open(href) as src:
                    src.read(1, window=((0, 1), (0, 1)))
            except Exception as exc:  # noqa: BLE001 - we only report it
                return item["id"], f"item {item['id']!r} asset {key!r} ({href}): {str(exc).splitlines()[0]}"
    return None, "an asset (could not tell which)"


def _load_group(items: list[dict[str, Any]], band_keys: list[str], geobox) -> np.ndarray:
    """(T, C, h, w) raw DNs of one group (T = items); raises UnreadableAssetError naming the bad asset."""
    import odc.stac
    import pystac

    try:
        ds = odc.stac.load(
            [pystac.Item.from_dict(i, preserve_dict=True) for i in items],
            bands=band_keys,
            geobox=geobox,
            groupby="id",
            resampling="nearest",
            chunks=None,
            preserve_original_order=True,
        )
    except Exception as exc:  # noqa: BLE001 -- GDAL/odc raise many types; _find_unreadable names the culprit
        item_id, what = _find_unreadable(items, band_keys)
        raise UnreadableAssetError(
            f"cannot read {what}; fix or remove the granule, or pass --skip-bad-assets to leave such "
            "granules "
            f"out ({type(exc).__name__})",
            item_id,
        ) from None
    ids = [str(v) for v in ds["id"].values] if "id" in ds.coords else None
    arr = np.stack([ds[k].values for k in band_keys], axis=1)
    if ids is not None and ids != [i["id"] for i in items]:  # keep items' order for radiometry
        order = [ids.index(i["id"]) for i in items]
        arr = arr[order]
    return arr


def load_tile(
    items: list[dict[str, Any]],
    grid: SceneGrid,
    layout: TileLayout,
    key: TileKey,
) -> TileData:
    """Composite all items over one tile window.

    Args:
        items: STAC item dicts (hrefs absolute), already known to carry the 12 bands.
        grid, layout, key: which window to read.

    Raises:
        UnreadableAssetError: an asset cannot be read (its item is named).
    """
    mappings = [map_band_assets(i) for i in items]
    scl_items = [(item, m[SCL]) for item, m in zip(items, mappings) if SCL in m]
    scl_valid: dict[str, np.ndarray] = {}
    if scl_items:
        scl = _load_group(
            [i for i, _ in scl_items], [scl_items[0][1]], grid.window_geobox(layout, key, 20.0)
        )[:, 0]
        scl_valid = {item["id"]: scl_valid_20m(s) for (item, _), s in zip(scl_items, scl)}
    groups = []
    counts: dict[str, int] = {}
    for group in BAND_GROUPS:
        keys = [mappings[0][b] for b in group.bands]
        raw = _load_group(items, keys, grid.window_geobox(layout, key, float(group.gsd_m)))
        refl = np.empty(raw.shape, np.float32)
        for t, item in enumerate(items):
            for c, band in enumerate(group.bands):
                refl[t, c] = to_reflectance(raw[t, c], resolve_radiometry(item, mappings[t][band]))
            if item["id"] in scl_valid:
                refl[t][:, ~valid_at_factor(scl_valid[item["id"]], group.gsd_m)] = np.nan
            if group.gsd_m == 10:
                counts[item["id"]] = int(np.isfinite(refl[t]).all(axis=0).sum())
        groups.append(median_composite(refl))
    return TileData(b10=groups[0], b20=groups[1], b60=groups[2], observations=counts)
