"""Broken scene folders: every failure to open or read a band file is a one-line error naming the file.

Library level (`read_scene` raises AssetError/DataError with the file and what to do) and CLI level
(`difffusr superres` exits 2 with one stderr line and writes nothing).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import rasterio

from pipeline.cli import main
from pipeline.errors import AssetError, DataError
from pipeline.io.scene_files import read_bands, read_scene
from tests.conftest import HELDOUT

SOURCE = HELDOUT / "S2A_MSIL2A_20170617T113321_4_55"


def _truncated_after_header(folder: Path) -> None:
    """The header survives (the file opens), the tile data is cut off: the *read* fails."""
    data = (SOURCE / "B04.tif").read_bytes()
    (folder / "B04.tif").write_bytes(data[:4000])


def _truncated_in_header(folder: Path) -> None:
    """Cut inside the TIFF directory: the *open* fails."""
    (folder / "B04.tif").write_bytes((SOURCE / "B04.tif").read_bytes()[:300])


def _zero_bytes(folder: Path) -> None:
    (folder / "B04.tif").write_bytes(b"")


def _not_a_raster(folder: Path) -> None:
    (folder / "B04.tif").write_text("<html>404 Not Found</html>\n")


def _other_crs(folder: Path) -> None:
    """B8A in UTM zone 30 while the other bands are in zone 29."""
    with rasterio.open(SOURCE / "B8A.tif") as src:
        profile, data = src.profile, src.read(1)
    with rasterio.open(folder / "B8A.tif", "w", **{**profile, "crs": "EPSG:32630"}) as dst:
        dst.write(data, 1)


CASES: dict[str, tuple[Callable[[Path], None], type[Exception], str]] = {
    "truncated": (_truncated_after_header, AssetError, r"B04\.tif' is truncated or corrupt .*replace it"),
    "truncated_header": (_truncated_in_header, AssetError, r"B04\.tif' is truncated or corrupt .*replace it"),
    "zero_bytes": (_zero_bytes, AssetError, r"B04\.tif' is empty \(0 bytes\); replace it"),
    "not_a_raster": (_not_a_raster, AssetError, r"B04\.tif' is not a GeoTIFF .*replace it"),
    "mixed_crs": (_other_crs, DataError, r"different CRSs .*reproject them to one"),
}


def _broken_scene(tmp_path: Path, case: str) -> Path:
    folder = tmp_path / "scene"
    shutil.copytree(SOURCE, folder)
    CASES[case][0](folder)
    return folder


@pytest.mark.parametrize("case", sorted(CASES))
def test_read_scene_names_the_broken_band_file(tmp_path: Path, case: str) -> None:
    folder = _broken_scene(tmp_path, case)
    _, error, match = CASES[case]
    with pytest.raises(error, match=match):
        read_scene(folder)


@pytest.mark.parametrize("case", ["truncated", "zero_bytes", "not_a_raster"])
def test_reading_some_bands_names_the_broken_band_file(tmp_path: Path, case: str) -> None:
    """The RGB reader of SR training and evaluation fails the same way."""
    folder = _broken_scene(tmp_path, case)
    with pytest.raises(AssetError, match=CASES[case][2]):
        read_bands(folder, ("B04", "B03", "B02"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_superres_on_a_broken_scene_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _broken_scene(tmp_path, case)
    out = tmp_path / "sr.tif"
    assert main(["superres", str(folder), str(out), "--method", "bicubic"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err
    assert ("B04.tif" if case != "mixed_crs" else "different CRSs") in err[0]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [folder]
