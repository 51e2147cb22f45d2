"""Asset-key mapping and radiometry on real STAC items of every provider (data/samples/stac_items)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.bands import S2_BANDS
from pipeline.catalog.assets import map_band_assets
from pipeline.catalog.radiometry import (
    Radiometry,
    processing_baseline,
    resolve_file_radiometry,
    resolve_radiometry,
    to_reflectance,
)
from pipeline.errors import AssetError
from tests.conftest import CATALOG, STAC_ITEMS


def _items(path):
    doc = json.loads(path.read_text())
    if isinstance(doc, list):
        return doc
    if doc.get("type") == "FeatureCollection":
        return doc["features"]
    return [doc] if doc.get("type") == "Feature" else []


L2A_FILES = sorted(
    p
    for p in STAC_ITEMS.rglob("*.json")
    if "naip" not in p.name and "l1c" not in p.name.lower() and "collection" not in p.name
)


@pytest.mark.parametrize("path", L2A_FILES, ids=lambda p: f"{p.parent.name}/{p.name[:40]}")
def test_every_provider_l2a_item_maps_all_12_bands_and_scl(path):
    items = [i for i in _items(path) if "L1C" not in i["id"] and "l1c" not in i.get("collection", "")]
    assert items, path
    for item in items:
        mapping = map_band_assets(item)
        assert set(S2_BANDS) <= set(mapping), item["id"]
        assert "SCL" in mapping, item["id"]
        for key in mapping.values():
            assert key in item["assets"]


def test_provider_specific_keys_are_chosen():
    es1 = _items(STAC_ITEMS / "earth_search_v1" / "sentinel-2-l2a__S2B_24MVV_20250731_0_L2A.json")[0]
    cdse = _items(next((STAC_ITEMS / "cdse").glob("*.json")))[0]
    pc = _items(
        STAC_ITEMS / "planetary_computer" / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
    )[0]
    assert map_band_assets(es1)["B8A"] == "nir08" and map_band_assets(es1)["SCL"] == "scl"
    assert map_band_assets(cdse)["B02"] == "B02_10m" and map_band_assets(cdse)["B05"] == "B05_20m"
    assert map_band_assets(cdse)["B01"] == "B01_60m" and map_band_assets(cdse)["SCL"] == "SCL_20m"
    assert map_band_assets(pc)["B8A"] == "B8A"


def test_missing_band_asset_names_item_and_keys():
    item = _items(STAC_ITEMS / "earth_search_v1" / "sentinel-2-l2a__S2B_24MVV_20250731_0_L2A.json")[0]
    del item["assets"]["rededge2"]
    with pytest.raises(
        AssetError, match=r"no asset for band B06 .*S2B_24MVV_20250731_0_L2A|S2B_24MVV_20250731_0_L2A.*B06"
    ):
        map_band_assets(item)


def test_radiometry_follows_each_items_metadata():
    es1 = _items(STAC_ITEMS / "earth_search_v1" / "sentinel-2-l2a__S2B_24MVV_20250731_0_L2A.json")[0]
    r = resolve_radiometry(es1, "blue")
    assert (r.scale, r.offset, r.source) == (0.0001, -0.1, "raster:bands")
    cdse = _items(next((STAC_ITEMS / "cdse").glob("*.json")))[0]
    r = resolve_radiometry(cdse, "B02_10m")
    assert (r.scale, r.offset, r.source) == (0.0001, -0.1, "raster:scale")
    # Planetary Computer items carry no raster metadata: baseline 02.12 -> no offset ...
    pc = _items(
        STAC_ITEMS / "planetary_computer" / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
    )[0]
    assert processing_baseline(pc) == pytest.approx(2.12)
    assert resolve_radiometry(pc, "B02").offset == 0.0
    # ... while baseline >= 04.00 gets the -1000 DN offset unless the provider says it is applied.
    pc["properties"]["s2:processing_baseline"] = "04.00"
    assert resolve_radiometry(pc, "B02").offset == pytest.approx(-0.1)
    pc["properties"]["earthsearch:boa_offset_applied"] = True
    assert resolve_radiometry(pc, "B02").offset == 0.0


def test_bundled_catalog_items_have_no_offset():
    item = json.loads(next(CATALOG.glob("*/S2A_MSIL2A_20170613T101031_87_48.json")).read_text())
    r = resolve_radiometry(item, map_band_assets(item)["B04"])
    assert (r.scale, r.offset) == (0.0001, 0.0)


def test_nodata_stays_nodata_after_scaling():
    dn = np.array([[0, 1000], [1500, 65535]], np.uint16)
    refl = to_reflectance(dn, Radiometry(scale=1e-4, offset=-0.1))
    assert np.isnan(refl[0, 0])
    assert refl[0, 1] == pytest.approx(0.0, abs=1e-6) and refl[1, 0] == pytest.approx(0.05, abs=1e-6)


def test_every_uint16_dn_converts_to_the_correctly_rounded_dn_over_10000():
    dn = np.arange(2**16, dtype=np.uint16)
    refl = to_reflectance(dn, Radiometry(scale=1e-4, offset=0.0, nodata=None))
    np.testing.assert_array_equal(refl, (dn.astype(np.float64) / 10000.0).astype(np.float32))
    # a baseline-04.00 DN (+1000) with the -0.1 offset gives the same number as the old product's DN
    shifted = to_reflectance(
        dn[: 2**16 - 1000] + np.uint16(1000), Radiometry(scale=1e-4, offset=-0.1, nodata=None)
    )
    np.testing.assert_array_equal(shifted, refl[: 2**16 - 1000])


@pytest.mark.parametrize(
    "integer,scale,offset,nodata,baseline,expected",
    [
        (True, 1.0, 0.0, None, None, (1e-4, 0.0, 0, "default")),
        (True, 1.0, 0.0, None, 4.0, (1e-4, -0.1, 0, "baseline>=04.00")),
        (True, 1.0, 0.0, None, 2.12, (1e-4, 0.0, 0, "default")),
        (True, 1e-4, -0.1, 0.0, 2.12, (1e-4, -0.1, 0, "geotiff")),  # declared tags win
        (True, 2e-5, 0.0, 65535.0, None, (2e-5, 0.0, 65535, "geotiff")),
        (False, 1.0, 0.0, None, None, (1.0, 0.0, None, "float")),
    ],
)
def test_a_geotiffs_own_tags_resolve_by_the_stac_rules(integer, scale, offset, nodata, baseline, expected):
    r = resolve_file_radiometry(integer=integer, scale=scale, offset=offset, nodata=nodata, baseline=baseline)
    assert (r.scale, r.offset, r.nodata, r.source) == expected
