"""The bundled sample data are what data/README.md says (real COGs matching their STAC items)."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pystac
import pytest
import rasterio

from tests.plugins.services import SAMPLE_CATALOG

SAMPLES = SAMPLE_CATALOG.parent
KEYS = (
    "coastal",
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "nir09",
    "swir16",
    "swir22",
)
ITEM_FILES = sorted(SAMPLE_CATALOG.glob("*/*.json"))


def test_catalog_has_four_items_and_a_collection() -> None:
    coll = pystac.Collection.from_file(str(SAMPLE_CATALOG / "collection.json"))
    assert coll.id == "sentinel-2-l2a" and len(ITEM_FILES) == 4


@pytest.mark.parametrize("item_file", ITEM_FILES, ids=lambda p: p.parent.name)
def test_item_assets_match_their_cogs(item_file: Path) -> None:
    raw = json.loads(
        item_file.read_text()
    )  # the file as written (pystac would migrate proj:epsg -> proj:code)
    item = pystac.Item.from_file(str(item_file))
    assert item.collection_id == "sentinel-2-l2a" and tuple(item.assets) == KEYS
    west, south, east, north = item.bbox
    assert west < east and south < north and -180 <= west and north <= 90
    for key in KEYS:
        meta = raw["assets"][key]
        assert meta["href"].startswith("./") and meta["raster:bands"][0]["scale"] == 0.0001
        with rasterio.open(item.assets[key].get_absolute_href()) as src:
            assert src.profile["compress"].lower() == "deflate" and src.dtypes[0] == "uint16"
            assert src.nodata == 0 and src.descriptions[0] == Path(meta["href"]).stem
            assert src.crs.to_epsg() == meta["proj:epsg"] == raw["properties"]["proj:epsg"]
            assert list(src.shape) == meta["proj:shape"]
            assert list(src.transform)[:6] == meta["proj:transform"]
            assert src.res[0] == meta["gsd"]
            assert int(src.read(1).min()) > 0  # no nodata in these patches


def test_heldout_folders_are_band_id_copies_of_the_catalog() -> None:
    folders = sorted((SAMPLES / "heldout").iterdir())
    assert [f.name for f in folders] == ["S2A_MSIL2A_20170617T113321_4_55", "S2B_MSIL2A_20170924T93020_69_24"]
    for folder in folders:
        names = sorted(p.name for p in folder.glob("*.tif"))
        assert len(names) == 12 and "B8A.tif" in names
        for name in names:
            assert filecmp.cmp(folder / name, SAMPLE_CATALOG / folder.name / name, shallow=False)


def test_scenes_have_nodata_clouds_and_real_items() -> None:
    ie = SAMPLES / "scenes" / "ireland_t29unu_l2a_60m_crop128"
    with rasterio.open(ie / "B02_60m.tif") as src:
        b02 = src.read(1)
    assert b02.shape == (128, 128) and 0.1 < (b02 == 0).mean() < 0.4 and (b02 > 3000).mean() > 0.2
    assert '<BOA_ADD_OFFSET band_id="0">-1000</BOA_ADD_OFFSET>' in (ie / "MTD_MSIL2A.xml").read_text()
    ws = SAMPLES / "scenes" / "western_sahara_29rkh_100m_crop"
    real = json.loads((ws / "S2A_29RKH_20200219_0_L2A.json").read_text())
    assert real["assets"]["blue"]["href"].startswith("https://sentinel-cogs")
    local = json.loads((ws / "item_local.json").read_text())
    for key in KEYS + ("scl",):
        with rasterio.open(ws / local["assets"][key]["href"]) as src:
            assert list(src.shape) == local["assets"][key]["proj:shape"]
