"""The inference tile layout on a scene's 10 m grid. Pure: no torch, rasterio or ray.

A scene of H x W pixels at 10 m (both multiples of 6, so that the 20 m and 60 m grids nest exactly) is cut
into cores of `core` x `core` pixels; each tile's window is its core grown by `halo` pixels on every side.
Windows reach outside the scene at its borders; those pixels are nodata. Every tile has the same window size,
so tiles batch together. Outputs are 4x finer (2.5 m).

A layout anchored to its zone's tile lattice (`io.grid.job_grid(anchor="zone")`) also knows the lattice
index of its tile (0, 0) (`origin`), which seeds every tile by its global index, and the part of the scene
that is the product (`valid`): cores are nodata outside it. Such a layout's tiles are exactly the lattice
tiles whose windows reach the product, so every product pixel is a blend of all the windows that cover it,
as in any other job over the same ground: jobs and plan units that overlap agree there, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pipeline.errors import ConfigError

#: 60 m / 10 m: tile geometry must be a multiple of this so that all three band grids nest exactly.
GRID_MULTIPLE = 6
#: 10 m -> 2.5 m.
SR_FACTOR = 4
#: Default tile core side, 10 m pixels: 96 px = 960 m = 384 output pixels. The one source of the default
#: (`config.TilingConfig`, the CLI's --tile-size, `superres_folder` and `super_resolve_scene` read it).
DEFAULT_CORE = 96
#: Default halo (context/blend margin on each side), 10 m pixels; the one source, as DEFAULT_CORE.
DEFAULT_HALO = 12
#: How a job's tiles are laid (`--grid`): from the AOI's corner, or on its zone's fixed lattice
#: (`io.grid.job_grid`).
GridAnchor = Literal["aoi", "zone"]
GRID_ANCHORS: tuple[str, ...] = ("aoi", "zone")
#: Seeds of lattice-anchored tiles: seed + (row + OFFSET) * STRIDE + (col + OFFSET), non-negative and
#: distinct for every lattice index within +-2**24 (a 60 m lattice spans +-1,000 km of a zone in 16,700).
LATTICE_OFFSET = 2**24
LATTICE_STRIDE = 2**25


@dataclass(frozen=True, kw_only=True)
class TileKey:
    """Row and column of a tile in the layout."""

    row: int
    col: int

    @property
    def name(self) -> str:
        return f"{self.row:04d}_{self.col:04d}"


@dataclass(frozen=True, kw_only=True)
class TileLayout:
    """Tiles over a height x width scene at 10 m.

    Attributes:
        height, width: scene size, 10 m pixels (multiples of 6).
        core: side of a tile's core, 10 m pixels (multiple of 6).
        halo: context added on each side of the core, 10 m pixels (multiple of 6, >= 6 for blending).
        origin: (row, col) of tile (0, 0) on its zone's tile lattice; None for a grid of the AOI's own.
        valid: (y0, y1, x0, x1) 10 m pixels of the scene that are the product; cores are nodata outside.
            None: the whole scene.
    """

    height: int
    width: int
    core: int = DEFAULT_CORE
    halo: int = DEFAULT_HALO
    origin: tuple[int, int] | None = None
    valid: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("height", "width", "core", "halo"):
            value = getattr(self, name)
            if value % GRID_MULTIPLE or value < (GRID_MULTIPLE if name != "halo" else 0):
                raise ConfigError(
                    f"tile {name} {value} must be a positive multiple of {GRID_MULTIPLE} 10 m pixels "
                    "(60 m pixels must nest exactly); adjust --tile-size / --halo"
                )
        if self.halo * 2 > self.core:
            raise ConfigError(
                f"--halo {self.halo} is more than half of --tile-size {self.core}; use a smaller halo"
            )
        if self.valid is not None:
            y0, y1, x0, x1 = self.valid
            if not (0 <= y0 < y1 <= self.height and 0 <= x0 < x1 <= self.width):
                raise ValueError(
                    f"valid region {self.valid} is not inside the {self.height} x {self.width} scene"
                )

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.core)

    @property
    def cols(self) -> int:
        return math.ceil(self.width / self.core)

    @property
    def window(self) -> int:
        """Side of a tile's input window, 10 m pixels."""
        return self.core + 2 * self.halo

    def tile_keys(self) -> list[TileKey]:
        return [TileKey(row=r, col=c) for r in range(self.rows) for c in range(self.cols)]

    def window_origin(self, key: TileKey) -> tuple[int, int]:
        """(y0, x0) of the tile's window on the scene's 10 m grid (may be negative at the border)."""
        return key.row * self.core - self.halo, key.col * self.core - self.halo

    def core_bounds(self, key: TileKey) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the core on the 10 m grid, clipped to the scene."""
        y0, x0 = key.row * self.core, key.col * self.core
        return y0, min(y0 + self.core, self.height), x0, min(x0 + self.core, self.width)

    def neighbours(self, key: TileKey) -> list[TileKey]:
        """The tile and the up-to-8 tiles around it whose windows overlap its core."""
        return [
            TileKey(row=r, col=c)
            for r in range(max(0, key.row - 1), min(self.rows, key.row + 2))
            for c in range(max(0, key.col - 1), min(self.cols, key.col + 2))
        ]


def tile_seed(seed: int, key: TileKey, layout: TileLayout) -> int:
    """The seed of one tile's sampling noise: the job's seed plus the tile's index on the grid.

    The seeding rule of the project: a tile's pixels depend only on (inputs, weights, seed, tile position on
    the grid), never on how tiles are batched, how many workers run them or in which order. `difffusr run`,
    `difffusr superres` and the evaluation all derive each tile's generator from this function. On a
    zone-anchored layout the index is the tile's global lattice index, the same in every job that has the
    tile; otherwise it is the row-major index on the job's own grid.
    """
    if layout.origin is None:
        return seed + key.row * layout.cols + key.col
    row, col = layout.origin[0] + key.row, layout.origin[1] + key.col
    return seed + (row + LATTICE_OFFSET) * LATTICE_STRIDE + (col + LATTICE_OFFSET)


def valid_in_core(layout: TileLayout, key: TileKey) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the product's valid region inside the tile's core, core-relative 10 m pixels;
    None when the whole core is valid. An empty range (y0 == y1 or x0 == x1) means none of it is."""
    if layout.valid is None:
        return None
    cy0, cy1, cx0, cx1 = layout.core_bounds(key)
    vy0, vy1, vx0, vx1 = layout.valid
    y0, y1 = min(max(vy0, cy0), cy1) - cy0, max(min(vy1, cy1), cy0) - cy0
    x0, x1 = min(max(vx0, cx0), cx1) - cx0, max(min(vx1, cx1), cx0) - cx0
    return y0, max(y0, y1), x0, max(x0, x1)


def round_up(value: int, multiple: int = GRID_MULTIPLE) -> int:
    """Smallest multiple of `multiple` that is >= value."""
    return -(-value // multiple) * multiple
