"""Build the bundled sample data under ``data/samples/`` from the real source scenes.

Usage::

    python -m infra.local.make_samples SOURCE_DATA_DIR [--out data/samples]

``SOURCE_DATA_DIR`` is the folder that holds ``s2/bigearthnet_l2a_patches``,
``s2/ireland_t29unu_l2a_60m_crop`` and ``s2/western_sahara_29rkh_l2a_full_tile_downsampled10x``
(see ``data/README.md`` for where those come from). Every raster is rewritten losslessly
(uint16/uint8 values, CRS and transform are asserted identical to the source window); nothing is
resampled or synthesised. Outputs:

- ``catalog/``: ``collection.json`` + one Earth Search v1 style STAC item and 12 band COGs per
  BigEarthNet patch (asset hrefs relative to the item file).
- ``heldout/<patch>/B01.tif ... B12.tif``: the two held-out patches (band-id file names).
- ``scenes/ireland_t29unu_l2a_60m_crop128/``: 128 x 128 px window of the baseline-04.00 crop.
- ``scenes/western_sahara_29rkh_100m_crop/``: 12 km window of the 10x-downsampled tile + SCL,
  the real Earth Search v1 item unchanged, and a local item pointing at the cropped files.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.warp import transform_geom
from rasterio.windows import Window

# Earth Search v1 asset key, band id, native GSD (m), description, centre wavelength (um), FWHM (um).
ES_V1_BANDS: tuple[tuple[str, str, int, str, float, float], ...] = (
    ("coastal", "B01", 60, "Coastal aerosol (band 1)", 0.443, 0.027),
    ("blue", "B02", 10, "Blue (band 2)", 0.49, 0.098),
    ("green", "B03", 10, "Green (band 3)", 0.56, 0.045),
    ("red", "B04", 10, "Red (band 4)", 0.665, 0.038),
    ("rededge1", "B05", 20, "Red edge 1 (band 5)", 0.704, 0.019),
    ("rededge2", "B06", 20, "Red edge 2 (band 6)", 0.74, 0.018),
    ("rededge3", "B07", 20, "Red edge 3 (band 7)", 0.783, 0.028),
    ("nir", "B08", 10, "NIR 1 (band 8)", 0.842, 0.145),
    ("nir08", "B8A", 20, "NIR 2 (band 8A)", 0.865, 0.033),
    ("nir09", "B09", 60, "NIR 3 (band 9)", 0.945, 0.026),
    ("swir16", "B11", 20, "SWIR 1 (band 11)", 1.61, 0.143),
    ("swir22", "B12", 20, "SWIR 2 (band 12)", 2.19, 0.242),
)
HELDOUT_PATCHES = ("S2A_MSIL2A_20170617T113321_4_55", "S2B_MSIL2A_20170924T93020_69_24")
COLLECTION_ID = "sentinel-2-l2a"
COG_OPTS = {
    "driver": "COG",
    "compress": "DEFLATE",
    "predictor": 2,
    "level": 9,
    "blocksize": 256,
    "overviews": "NONE",
}
LEGAL_NOTICE = "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice"
CDLA = "https://cdla.dev/permissive-1-0/"
STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
]
# Windows chosen by scanning the sources (see data/README.md): (row, col, height, width).
IRELAND_WINDOW = (128, 368, 128, 128)  # in the 512 x 512 60 m crop: ~23 % nodata, ~34 % cloud
SAHARA_WINDOW_200M = (60, 420, 60, 60)  # in the 549 x 549 200 m grid: SCL classes 5, 8, 9, 10


def write_cog(
    src_path: Path,
    dst_path: Path,
    window: Window | None = None,
    nodata: float | None = 0,
    description: str | None = None,
) -> dict[str, Any]:
    """Copy one single-band raster (optionally a window) losslessly to a COG.

    Args:
        src_path: source GeoTIFF.
        dst_path: output COG path (parents are created).
        window: pixel window of the source to keep, or None for the whole raster.
        nodata: nodata value to declare on the output (None leaves it unset).
        description: band description (the band id).

    Returns:
        dict with ``shape`` [rows, cols], ``transform`` (6 floats), ``epsg`` (int) and ``dtype``.
    """
    with rasterio.open(src_path) as src:
        data = src.read(1, window=window)
        transform = src.window_transform(window) if window is not None else src.transform
        crs, dtype = src.crs, src.dtypes[0]
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        COG_OPTS,
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    )
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data, 1)
        if description:
            dst.set_band_description(1, description)
    with rasterio.open(dst_path) as chk:  # lossless check
        assert np.array_equal(chk.read(1), data), dst_path
        assert chk.crs == crs and chk.transform == transform, dst_path
    return {
        "shape": [int(data.shape[0]), int(data.shape[1])],
        "transform": list(transform)[:6],
        "epsg": int(crs.to_epsg()),
        "dtype": dtype,
    }


def footprint_lonlat(epsg: int, transform: list[float], shape: list[int]) -> dict[str, Any]:
    """GeoJSON polygon (EPSG:4326, lon/lat, counter-clockwise) of a north-up raster's four corners."""
    x0, y0 = transform[2], transform[5]
    x1, y1 = x0 + transform[0] * shape[1], y0 + transform[4] * shape[0]
    ring = [[x0, y0], [x0, y1], [x1, y1], [x1, y0], [x0, y0]]
    geom = transform_geom(f"EPSG:{epsg}", "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    coords = [[round(c[0], 9), round(c[1], 9)] for c in geom["coordinates"][0]]
    return {"type": "Polygon", "coordinates": [coords]}


def bbox_of(geom: dict[str, Any]) -> list[float]:
    """[west, south, east, north] of a GeoJSON polygon."""
    pts = np.asarray(geom["coordinates"][0])
    return [float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())]


def band_asset(
    key: str, band: str, gsd: int, desc: str, wl: float, fwhm: float, grid: dict[str, Any], href: str
) -> dict[str, Any]:
    """One Earth Search v1 style band asset (COG, raster:bands scale 0.0001 offset 0, nodata 0)."""
    return {
        "href": href,
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "title": f"{desc} - {gsd}m",
        "eo:bands": [
            {
                "name": key,
                "common_name": key,
                "description": desc,
                "center_wavelength": wl,
                "full_width_half_max": fwhm,
            }
        ],
        "gsd": gsd,
        "proj:epsg": grid["epsg"],
        "proj:shape": grid["shape"],
        "proj:transform": grid["transform"],
        "raster:bands": [
            {
                "nodata": 0,
                "data_type": "uint16",
                "bits_per_sample": 15,
                "spatial_resolution": gsd,
                "scale": 0.0001,
                "offset": 0,
            }
        ],
        "roles": ["data", "reflectance"],
    }


def build_patch_item(patch_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Rewrite one BigEarthNet patch as 12 COGs + an Earth Search v1 style item; return the item."""
    pid = patch_dir.name
    meta = json.loads((patch_dir / f"{pid}_labels_metadata.json").read_text())
    item_dir = out_dir / pid
    assets, grids = {}, {}
    for key, band, gsd, desc, wl, fwhm in ES_V1_BANDS:
        src = patch_dir / f"{pid}_{band}.tif"
        with rasterio.open(src) as s:  # 0 is the L2A no-data value; no valid pixel may be 0
            assert s.nodata is None and int(s.read(1).min()) > 0, f"{src} has 0 pixels"
        grids[band] = write_cog(src, item_dir / f"{band}.tif", nodata=0, description=band)
        assert abs(grids[band]["transform"][0] - gsd) < 1e-9, src
        assets[key] = band_asset(key, band, gsd, desc, wl, fwhm, grids[band], f"./{band}.tif")
    # tile_source e.g. S2A_MSIL1C_20170613T101031_N0205_R022_T33UUP_20170613T101608.SAFE
    parts = meta["tile_source"].split("_")
    tile = parts[5][1:]
    baseline = f"{parts[3][1:3]}.{parts[3][3:5]}"
    acq = datetime.strptime(meta["acquisition_date"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    geom = footprint_lonlat(grids["B02"]["epsg"], grids["B02"]["transform"], grids["B02"]["shape"])
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": STAC_EXTENSIONS,
        "id": pid,
        "collection": COLLECTION_ID,
        "geometry": geom,
        "bbox": bbox_of(geom),
        "properties": {
            "datetime": acq.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "platform": "sentinel-2a" if pid.startswith("S2A") else "sentinel-2b",
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "eo:cloud_cover": 0.0,
            "proj:epsg": grids["B02"]["epsg"],
            "mgrs:utm_zone": int(tile[:2]),
            "mgrs:latitude_band": tile[2],
            "mgrs:grid_square": tile[3:],
            "grid:code": f"MGRS-{tile}",
            "s2:mgrs_tile": tile,
            "s2:product_type": "S2MSI2A",
            "s2:processing_baseline": baseline,
            "earthsearch:boa_offset_applied": False,
            "bigearthnet:patch": pid,
            "bigearthnet:source_product": meta["tile_source"],
            "bigearthnet:labels": meta["labels"],
        },
        "links": [
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
            {"rel": "license", "href": LEGAL_NOTICE, "title": "Sentinel data legal notice"},
            {"rel": "license", "href": CDLA, "title": "BigEarthNet: CDLA-Permissive-1.0"},
        ],
        "assets": assets,
    }
    (item_dir / f"{pid}.json").write_text(json.dumps(item, indent=1) + "\n")
    return item


def build_collection(items: list[dict[str, Any]], out_dir: Path) -> None:
    """Write ``collection.json`` for the bundled ``sentinel-2-l2a`` items."""
    bboxes = np.asarray([it["bbox"] for it in items])
    times = sorted(it["properties"]["datetime"] for it in items)
    item_assets = {}
    for key, band, gsd, desc, wl, fwhm in ES_V1_BANDS:
        a = band_asset(key, band, gsd, desc, wl, fwhm, {"epsg": 0, "shape": [], "transform": []}, "")
        item_assets[key] = {k: v for k, v in a.items() if not k.startswith("proj:") and k != "href"}
    coll = {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/item-assets/v1.0.0/schema.json"],
        "id": COLLECTION_ID,
        "title": "Sentinel-2 Level-2A (bundled difffusr samples)",
        "description": (
            "Four real Sentinel-2 L2A 1.2 x 1.2 km patches from BigEarthNet-S2 v1.0 (Austria, "
            "Ireland x2, Finland; 2017), rewritten losslessly as COGs, with Earth Search v1 asset "
            "keys. Contains modified Copernicus Sentinel data 2017."
        ),
        "license": "CDLA-Permissive-1.0",
        "keywords": ["sentinel", "copernicus", "msi", "l2a", "bigearthnet"],
        "providers": [
            {"name": "ESA", "roles": ["producer", "licensor"], "url": "https://sentinel.esa.int/"},
            {"name": "TU Berlin RSiM (BigEarthNet)", "roles": ["processor"], "url": "https://bigearth.net/"},
        ],
        "extent": {
            "spatial": {
                "bbox": [
                    [
                        float(bboxes[:, 0].min()),
                        float(bboxes[:, 1].min()),
                        float(bboxes[:, 2].max()),
                        float(bboxes[:, 3].max()),
                    ]
                ]
            },
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "summaries": {
            "platform": sorted({it["properties"]["platform"] for it in items}),
            "constellation": ["sentinel-2"],
            "instruments": ["msi"],
            "gsd": [10, 20, 60],
        },
        "item_assets": item_assets,
        "links": [
            {"rel": "license", "href": LEGAL_NOTICE, "title": "Sentinel data legal notice"},
            {"rel": "license", "href": CDLA, "title": "BigEarthNet: CDLA-Permissive-1.0"},
        ],
    }
    (out_dir / "collection.json").write_text(json.dumps(coll, indent=1) + "\n")


def build_ireland(src_dir: Path, out_dir: Path) -> None:
    """128 x 128 px window of the baseline-04.00 60 m crop (nodata edge + clouds) + MTD_MSIL2A.xml."""
    r, c, h, w = IRELAND_WINDOW
    for src in sorted(src_dir.glob("B*_60m.tif")):
        write_cog(src, out_dir / src.name, Window(c, r, w, h), nodata=0, description=src.stem.split("_")[0])
    shutil.copyfile(src_dir / "MTD_MSIL2A.xml", out_dir / "MTD_MSIL2A.xml")


def build_sahara(src_dir: Path, out_dir: Path) -> None:
    """12 km window of the 10x-downsampled tile (bands + SCL), the real item, and a local item."""
    r20, c20, h20, w20 = SAHARA_WINDOW_200M
    item_src = src_dir / "S2A_29RKH_20200219_0_L2A.json"
    shutil.copyfile(item_src, out_dir / item_src.name)  # unchanged, for asset-mapping tests
    real = json.loads(item_src.read_text())
    local = copy.deepcopy(real)
    keep = {k for k, *_ in ES_V1_BANDS} | {"scl"}
    local["assets"] = {k: v for k, v in local["assets"].items() if k in keep}
    grids = {}
    for key, asset in local["assets"].items():
        fname = asset["href"].rsplit("/", 1)[1]
        native = asset["proj:transform"][0]  # 10/20/60 m; these files are 10x coarser
        f = native * 10 / 200.0  # pixels of this file per 200 m pixel
        win = Window(int(c20 / f), int(r20 / f), int(w20 / f), int(h20 / f))
        grid = write_cog(src_dir / fname, out_dir / fname, win, nodata=0, description=fname.split(".")[0])
        grids[key] = grid
        asset["href"] = f"./{fname}"
        asset["proj:shape"], asset["proj:transform"] = grid["shape"], grid["transform"]
        if "gsd" in asset:
            asset["gsd"] = native * 10
        for rb in asset.get("raster:bands", []):
            rb["spatial_resolution"] = native * 10
    geom = footprint_lonlat(grids["blue"]["epsg"], grids["blue"]["transform"], grids["blue"]["shape"])
    local["id"] = real["id"] + "_crop100m"
    local["geometry"], local["bbox"] = geom, bbox_of(geom)
    local["links"] = [ln for ln in real["links"] if ln["rel"] in ("license", "derived_from")]
    local["properties"]["difffusr:derived_from"] = (
        f"{real['id']}: 10x-downsampled COG overviews, window rows/cols {r20}:{r20 + h20}/{c20}:{c20 + w20} "
        "of the 200 m grid; eo:cloud_cover and s2:* percentages describe the whole tile"
    )
    (out_dir / "item_local.json").write_text(json.dumps(local, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: build every sample folder under ``--out``."""
    ap = argparse.ArgumentParser(
        prog="python -m infra.local.make_samples", description=__doc__.split("\n")[0]
    )
    ap.add_argument("source", type=Path, help="folder holding s2/bigearthnet_l2a_patches etc.")
    ap.add_argument("--out", type=Path, default=Path("data/samples"))
    args = ap.parse_args(argv)
    s2 = args.source / "s2"
    cat = args.out / "catalog"
    if cat.exists():
        shutil.rmtree(cat)
    cat.mkdir(parents=True)
    items = [
        build_patch_item(p, cat) for p in sorted((s2 / "bigearthnet_l2a_patches").iterdir()) if p.is_dir()
    ]
    build_collection(items, cat)
    for pid in HELDOUT_PATCHES:
        dst = args.out / "heldout" / pid
        dst.mkdir(parents=True, exist_ok=True)
        for _, band, *_ in ES_V1_BANDS:
            shutil.copyfile(cat / pid / f"{band}.tif", dst / f"{band}.tif")
    for name, fn, src in (
        ("ireland_t29unu_l2a_60m_crop128", build_ireland, s2 / "ireland_t29unu_l2a_60m_crop"),
        (
            "western_sahara_29rkh_100m_crop",
            build_sahara,
            s2 / "western_sahara_29rkh_l2a_full_tile_downsampled10x",
        ),
    ):
        dst = args.out / "scenes" / name
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        fn(src, dst)
    print(
        f"wrote {len(items)} catalog items, {len(HELDOUT_PATCHES)} held-out patches, "
        f"2 scenes under {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
