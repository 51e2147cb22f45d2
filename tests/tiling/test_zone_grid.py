"""The zone-anchored tile grid (`job_grid(anchor="zone")`): tiles are cells of a lattice fixed per CRS,
seeded by their lattice index, and the product of any two jobs agrees wherever they overlap. Pure: no model,
no I/O; a tile's "prediction" is noise drawn from its seed and its window's place on the map, as a model's
would be."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.io.grid import JobGrid, job_grid
from pipeline.tiling.blend import blend_core
from pipeline.tiling.grid import SR_FACTOR, TileKey, tile_seed

CRS = "EPSG:32633"
CORE, HALO = 24, 6
#: A point of UTM zone 33N (the demo patch), and AOI sizes in degrees around it.
LON, LAT = 13.72, 48.22
aoi_sizes = st.tuples(
    st.floats(-0.02, 0.02), st.floats(-0.02, 0.02), st.floats(0.004, 0.03), st.floats(0.003, 0.02)
)


def _bbox(dx: float, dy: float, w: float, h: float) -> tuple[float, float, float, float]:
    return (LON + dx, LAT + dy, LON + dx + w, LAT + dy + h)


def _window_box(job: JobGrid, key: TileKey) -> tuple[float, float]:
    """Upper-left corner (x, y) in metres of a tile's 10 m window on the map."""
    box = job.grid.window_geobox(job.layout, key, 10.0)
    return box.affine.c, box.affine.f


def _fake_prediction(job: JobGrid, key: TileKey, seed: int = 7) -> np.ndarray:
    """What a model gives for the tile: a function of its seed and its window's place only."""
    x, y = _window_box(job, key)
    rng = np.random.default_rng([tile_seed(seed, key, job.layout), int(x), int(y)])
    side = job.layout.window * SR_FACTOR
    return rng.random((2, side, side), dtype=np.float32)


def _product(job: JobGrid) -> np.ndarray:
    """The blended product of a job on its grid (2, H*4, W*4), NaN outside its AOI."""
    layout = job.layout
    out = np.full((2, layout.height * SR_FACTOR, layout.width * SR_FACTOR), np.nan, np.float32)
    predictions = {k: _fake_prediction(job, k) for k in layout.tile_keys()}
    for key in layout.tile_keys():
        y0, y1, x0, x1 = (v * SR_FACTOR for v in layout.core_bounds(key))
        out[:, y0:y1, x0:x1] = blend_core(layout, key, predictions.get, channels=2)
    return out


def _overlap(a: JobGrid, b: JobGrid) -> tuple[np.ndarray, np.ndarray]:
    """The two products over the intersection of their grids (output pixels)."""
    pa, pb = _product(a), _product(b)
    left, top = max(a.grid.left, b.grid.left), min(a.grid.top, b.grid.top)
    right = min(a.grid.bounds[2], b.grid.bounds[2])
    bottom = max(a.grid.bounds[1], b.grid.bounds[1])
    assert right > left and top > bottom
    g = 10.0 / SR_FACTOR

    def crop(job: JobGrid, p: np.ndarray) -> np.ndarray:
        r0, c0 = round((job.grid.top - top) / g), round((left - job.grid.left) / g)
        return p[:, r0 : r0 + round((top - bottom) / g), c0 : c0 + round((right - left) / g)]

    return crop(a, pa), crop(b, pb)


@settings(max_examples=40, deadline=None)
@given(aoi=aoi_sizes)
def test_zone_tiles_are_the_lattice_cells_whose_windows_reach_the_aoi(aoi):
    job = job_grid(_bbox(*aoi), CRS, core=CORE, halo=HALO, anchor="zone")
    size, margin = CORE * 10.0, HALO * 10.0
    assert job.grid.left % size == 0 and job.grid.top % size == 0
    left, bottom, right, top = job.aoi.bounds
    y0, y1, x0, x1 = job.layout.valid
    assert (job.grid.left + x0 * 10, job.grid.top - y0 * 10) == (left, top)
    assert ((y1 - y0) * 10, (x1 - x0) * 10) == (top - bottom, right - left)

    def reaches(x: float, y: float) -> bool:  # a cell's window, from its core's upper-left corner (x, y)
        return (
            x - margin < right
            and x + size + margin > left
            and y + margin > bottom
            and y - size - margin < top
        )

    corners = {(job.grid.left + k.col * size, job.grid.top - k.row * size) for k in job.layout.tile_keys()}
    assert all(reaches(x, y) for x, y in corners)
    # and no cell outside the layout reaches the AOI: the ring around it does not
    rows, cols = job.layout.rows, job.layout.cols
    ring = [(r, c) for r in (-1, rows) for c in range(-1, cols + 1)] + [
        (r, c) for r in range(rows) for c in (-1, cols)
    ]
    assert not any(reaches(job.grid.left + c * size, job.grid.top - r * size) for r, c in ring)


@settings(max_examples=25, deadline=None)
@given(a=aoi_sizes, shift=st.tuples(st.floats(0.0, 0.008), st.floats(0.0, 0.006)))
def test_two_zone_jobs_agree_bit_for_bit_where_they_overlap(a, shift):
    dx, dy, w, h = a
    first = job_grid(_bbox(dx, dy, w, h), CRS, core=CORE, halo=HALO, anchor="zone")
    second = job_grid(
        _bbox(dx + shift[0] * w / 0.01, dy + shift[1] * h / 0.01, w, h),
        CRS,
        core=CORE,
        halo=HALO,
        anchor="zone",
    )
    pa, pb = _overlap(first, second)
    both = np.isfinite(pa) & np.isfinite(pb)
    assert both.any()  # the AOIs overlap
    np.testing.assert_array_equal(pa[both], pb[both])
    # and a tile both jobs have reads the same window and draws the same noise
    for key in first.layout.tile_keys():
        corner = _window_box(first, key)
        for other in second.layout.tile_keys():
            if _window_box(second, other) == corner:
                assert tile_seed(7, key, first.layout) == tile_seed(7, other, second.layout)


def test_jobs_on_their_own_aoi_grids_do_not_agree_where_they_overlap():
    """The control: tiles laid from each AOI's corner leave seams in the overlap (the test above can fail)."""
    first = job_grid(_bbox(0.0, 0.0, 0.012, 0.008), CRS, core=CORE, halo=HALO, anchor="aoi")
    second = job_grid(_bbox(0.005, 0.002, 0.012, 0.008), CRS, core=CORE, halo=HALO, anchor="aoi")
    pa, pb = _overlap(first, second)
    both = np.isfinite(pa) & np.isfinite(pb)
    assert both.any() and not np.array_equal(pa[both], pb[both])


def test_zone_seeds_are_global_and_distinct():
    job = job_grid(_bbox(0.0, 0.0, 0.01, 0.01), CRS, core=CORE, halo=HALO, anchor="zone")
    seeds = [tile_seed(0, k, job.layout) for k in job.layout.tile_keys()]
    assert len(set(seeds)) == len(seeds) and min(seeds) >= 0
    row0, col0 = job.layout.origin
    assert job.grid.left == col0 * CORE * 10 and job.grid.top == -row0 * CORE * 10


def test_an_unknown_grid_anchor_is_a_clear_error():
    from pipeline.config import TilingConfig
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="--grid 'mgrs' is not one of aoi, zone"):
        TilingConfig(grid="mgrs")
