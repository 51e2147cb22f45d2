"""`write_cog` lays out already-compressed tiles as a COG that GDAL reads back pixel for pixel, in classic
TIFF and BigTIFF, whatever the lengths of the tags' values."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from pipeline.errors import DataError
from pipeline.io.cog import tile_profile
from pipeline.io.scene_files import read_scene
from pipeline.io.tiff_file import (
    IMAGE_LENGTH,
    IMAGE_WIDTH,
    LONG,
    CogLevel,
    Tag,
    TileSource,
    read_ifds,
    write_cog,
)
from tests.conftest import HELDOUT

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _tiled(path, data: np.ndarray):
    """A GTiff with the COG's tile encoding holding `data` (C, h, w) uint16."""
    with rasterio.open(
        path,
        "w",
        **{**tile_profile("uint16"), "count": data.shape[0]},
        height=data.shape[1],
        width=data.shape[2],
    ) as dst:
        dst.write(data)
    return read_ifds(path)[0]


@pytest.mark.parametrize("bigtiff", [False, True])
def test_tiles_laid_out_as_a_cog_read_back_exactly(tmp_path, bigtiff):
    scene = read_scene(HELDOUT / "S2A_MSIL2A_20170617T113321_4_55")
    dn = np.round(np.kron(scene.groups[0], np.ones((8, 8), np.float32)) * 10000).astype(
        np.uint16
    )  # 960 x 960
    dn = np.concatenate([dn, dn[:, :, :300]], axis=2)  # 960 x 1260: edge tiles on both axes
    half = dn[:, ::2, ::2]
    full_ifd = _tiled(tmp_path / "full.tif", dn)
    half_ifd = _tiled(tmp_path / "half.tif", half)
    tags = {c: t for c, t in full_ifd.tags.items() if c not in (324, 325)}
    tags[33432] = Tag(2, 9, b"oddvalue\0")  # copyright: an odd-length value out of line, the last one
    ovr = {c: t for c, t in half_ifd.tags.items() if c not in (324, 325)}
    ovr[254] = Tag.of(LONG, [1])
    ovr[33432] = tags[33432]  # the last IFD's values end at an odd byte: the tiles still start aligned
    levels = [
        CogLevel(tags, [TileSource(tmp_path / "full.tif", full_ifd.tile_ranges())], tiles=2 * 3),
        CogLevel(ovr, [TileSource(tmp_path / "half.tif", half_ifd.tile_ranges())], tiles=1 * 2),
    ]
    write_cog(tmp_path / "cog.tif", levels, bigtiff=bigtiff)
    assert not (tmp_path / "full.tif").exists() and not (tmp_path / "half.tif").exists()
    assert (tmp_path / "cog.tif").read_bytes()[2] == (43 if bigtiff else 42)
    with rasterio.open(tmp_path / "cog.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        np.testing.assert_array_equal(src.read(), dn)
        assert src.overviews(1) == [2]
        np.testing.assert_array_equal(src.read(out_shape=half.shape), half)
        assert src.tags()["TIFFTAG_COPYRIGHT"] == "oddvalue"
    ifds = read_ifds(tmp_path / "cog.tif")
    assert [i.value(IMAGE_WIDTH) for i in ifds] == [1260, 630] and [i.value(IMAGE_LENGTH) for i in ifds] == [
        960,
        480,
    ]


def test_a_level_missing_tiles_is_refused_before_anything_is_removed(tmp_path):
    scene = read_scene(HELDOUT / "S2A_MSIL2A_20170617T113321_4_55")
    dn = np.round(np.kron(scene.groups[0], np.ones((8, 8), np.float32)) * 10000).astype(np.uint16)
    ifd = _tiled(tmp_path / "full.tif", dn)
    tags = {c: t for c, t in ifd.tags.items() if c not in (324, 325)}
    with pytest.raises(DataError, match="5 tiles got 4"):
        write_cog(
            tmp_path / "cog.tif", [CogLevel(tags, [TileSource(tmp_path / "full.tif", ifd.tile_ranges())], 5)]
        )
    assert (tmp_path / "full.tif").exists()
