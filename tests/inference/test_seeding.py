"""The seeding rule: a tile's pixels depend only on (inputs, weights, seed, tile position on the grid).

Checked with the shipped small weights and the `difffusr` method (2 DDIM steps) on a 48 x 48 px crop of a
bundled real scene, cut into 2 x 2 tiles: `superres` is the same for every batch size, and equals what
`run`'s inference workers compute for the same tile grid, whatever the batching and order of the tiles.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.inference.actors import TileWorker
from pipeline.inference.methods import MethodOptions, get_method
from pipeline.inference.scene import super_resolve_scene, tile_windows
from pipeline.io.scene_files import read_scene
from pipeline.io.work_store import DONE, WorkStore
from pipeline.tiling.blend import blend_core
from pipeline.tiling.grid import SR_FACTOR, TileLayout
from tests.conftest import HELDOUT

SIZE, CORE, HALO, SEED = 48, 24, 6, 7
OPTIONS = MethodOptions(steps=2)


@pytest.fixture(scope="module")
def groups() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scene = read_scene(HELDOUT / "S2A_MSIL2A_20170617T113321_4_55")
    crops = (g[:, : SIZE // k, : SIZE // k].copy() for g, k in zip(scene.groups, (1, 2, 6)))
    return tuple(crops)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def method():
    return get_method("difffusr", OPTIONS)


@pytest.fixture(scope="module")
def superres(groups, method) -> dict[int, np.ndarray]:
    return {
        b: super_resolve_scene(*groups, method, seed=SEED, core=CORE, halo=HALO, batch_size=b)
        for b in (1, 3, 4)
    }


def test_superres_pixels_do_not_depend_on_the_batch_size(superres):
    assert np.isfinite(superres[1]).all()
    assert np.array_equal(superres[1], superres[4]) and np.array_equal(superres[1], superres[3])


def test_superres_pixels_depend_on_the_seed(groups, method, superres):
    other = super_resolve_scene(*groups, method, seed=SEED + 1, core=CORE, halo=HALO, batch_size=4)
    assert not np.array_equal(other, superres[4])


def test_superres_equals_the_run_workers_on_the_same_tile_grid(groups, superres, tmp_path):
    layout = TileLayout(height=SIZE, width=SIZE, core=CORE, halo=HALO)
    keys = layout.tile_keys()
    assert len(keys) == 4
    store = WorkStore(str(tmp_path / "work.zarr"))
    store.create(layout, "seeding-test")
    for key in keys:
        store.write_tile(key, *tile_windows(layout, groups, key))
        store.mark("ingest", key, DONE)
    # Two workers, tiles in another order and other batches than superres used.
    first, second = (TileWorker("difffusr", OPTIONS, store, SEED) for _ in range(2))
    first.run([keys[3], keys[0]], layout)
    second.run([keys[2]], layout)
    first.run([keys[1]], layout)
    assert (store.status("infer") == DONE).all()
    for key in keys:
        y0, y1, x0, x1 = layout.core_bounds(key)
        block = blend_core(layout, key, store.read_prediction, channels=12)
        f = SR_FACTOR
        assert np.array_equal(block, superres[4][:, y0 * f : y1 * f, x0 * f : x1 * f]), key
