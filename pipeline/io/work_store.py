"""The job's working Zarr v3 store: ingested tiles, tile predictions and per-stage done markers.

Layout (one Zarr chunk per tile, so every write is a whole, disjoint chunk and tasks never race):
    tiles/b10  (rows, cols, 4, W, W)        float32 reflectance, NaN = nodata (W = window, 10 m px)
    tiles/b20  (rows, cols, 6, W/2, W/2)
    tiles/b60  (rows, cols, 2, W/6, W/6)
    pred       (rows, cols, 12, 4W, 4W)     float32 prediction of the whole window, S2 band order
    spread     (rows, cols, 12, 4W, 4W)     float32 per-pixel std over the --uncertainty draws (only with it)
    quality    (rows, cols, Q)              float32 per-tile quality figures (`QUALITY_COLUMNS`), NaN = none
    done/<stage> (rows, cols) uint8         0 = to do, 1 = done, 2 = done and empty (no valid pixel)
    overview   (3, qh, qw)                  float32 true-colour (B04 B03 B02) of the mosaic, every `step`-th
                                            output pixel, one chunk per tile core: the quicklook's source
A done marker is written only after its data, so a crash leaves the tile "to do" and a rerun redoes it.
A task reads the markers of its own neighbourhood only (`status_window`), never the whole AOI's, so its cost
does not grow with the region. Once a tile's data is no longer needed (its inputs after its prediction, its
prediction after its neighbours' cores), `free_*` deletes those chunks (writing the fill value deletes a Zarr
chunk): the store then holds about the tiles in flight, not the whole AOI.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from pipeline.bands import BAND_GROUPS
from pipeline.errors import OutputError
from pipeline.tiling.grid import SR_FACTOR, TileKey, TileLayout

STAGES = ("ingest", "infer", "mosaic")
TODO, DONE, EMPTY = 0, 1, 2
_GROUP_SHAPES = {"b10": (4, 1), "b20": (6, 2), "b60": (2, 6)}
_GROUP_NAMES = tuple(g.name for g in BAND_GROUPS)
#: The per-tile quality figures (`pipeline.inference.quality` computes them), in the `quality` array's order.
QUALITY_COLUMNS: tuple[str, ...] = (
    *(f"l1_{g}" for g in _GROUP_NAMES),
    *(f"sam_{g}" for g in _GROUP_NAMES),
    "nodata_share",
    *(f"spread_{g}" for g in _GROUP_NAMES),
    "spread_mean",
)
#: Unit of each figure.
QUALITY_UNITS: dict[str, str] = {
    c: "degree" if c.startswith("sam_") else "1" if c == "nodata_share" else "reflectance"
    for c in QUALITY_COLUMNS
}
#: Longest side of the quicklook, output pixels.
QUICKLOOK_MAX_SIDE = 1024


def overview_step(layout: TileLayout, max_side: int = QUICKLOOK_MAX_SIDE) -> int:
    """Decimation of the overview: the smallest divisor of the core's output side that brings the mosaic's
    longest side to at most `max_side` (a divisor, so every core fills whole overview chunks and the
    overview equals a strided read of the full mosaic)."""
    core_out = layout.core * SR_FACTOR
    longest = max(layout.height, layout.width) * SR_FACTOR
    for step in range(1, core_out + 1):
        if core_out % step == 0 and -(-longest // step) <= max_side:
            return step
    return core_out


def _compressor() -> Any:
    return zarr.codecs.ZstdCodec(level=3)


class WorkStore:
    """Typed access to the working store of one job (picklable: holds only the URL)."""

    def __init__(self, url: str) -> None:
        self.url = url  # a path or an fsspec URL; remote credentials come from the environment

    def _open(self, mode: str = "r+") -> zarr.Group:
        # Arrays are opened once per process and kept: every task of a worker reuses them (opening reads
        # the metadata documents, several per task otherwise). Their metadata never changes after `create`;
        # only chunks do, and chunks are always read afresh.
        if mode == "a":
            return zarr.open_group(self.url, mode=mode, zarr_format=3)
        group = self._groups.get(mode)
        if group is None:
            group = self._groups[mode] = zarr.open_group(self.url, mode=mode, zarr_format=3)
        return group

    def _array(self, name: str, mode: str = "r+") -> zarr.Array:
        key = (name, mode)
        arr = self._arrays.get(key)
        if arr is None:
            arr = self._arrays[key] = self._open(mode)[name]
        return arr

    @property
    def _groups(self) -> dict:
        return self.__dict__.setdefault("_group_cache", {})

    @property
    def _arrays(self) -> dict:
        return self.__dict__.setdefault("_array_cache", {})

    def __getstate__(self) -> dict:  # only the URL travels to Ray workers
        return {"url": self.url}

    def create(self, layout: TileLayout, fingerprint: str, *, spread: bool = False) -> None:
        """Create the arrays unless they exist for the same job; refuse a store of another job.

        `spread`: also the per-pixel spread array of `--uncertainty` (part of the job, so of its fingerprint).
        """
        try:
            root = self._open("a")
        except Exception as exc:  # noqa: BLE001 -- any fsspec/zarr error means "cannot create"
            raise OutputError(
                f"cannot create the work store at {self.url!r}: {exc}; check --out is writable"
            ) from None
        old = root.attrs.get("fingerprint")
        if old == fingerprint:
            if "quality" not in root:  # a store begun before the quality figures existed: add the array
                self._create_quality(root, layout)
            return
        if old is not None:
            raise OutputError(
                f"{self.url!r} holds the work of a different job (other AOI, dates or options); "
                "use a new --out, or --overwrite to discard it"
            )
        rows, cols, w = layout.rows, layout.cols, layout.window
        for name, (c, k) in _GROUP_SHAPES.items():
            root.create_array(
                f"tiles/{name}",
                shape=(rows, cols, c, w // k, w // k),
                chunks=(1, 1, c, w // k, w // k),
                dtype="float32",
                fill_value=np.nan,
                compressors=_compressor(),
                overwrite=True,
            )
        f = SR_FACTOR * w
        for name in ("pred", "spread") if spread else ("pred",):
            root.create_array(
                name,
                shape=(rows, cols, 12, f, f),
                chunks=(1, 1, 12, f, f),
                dtype="float32",
                fill_value=np.nan,
                compressors=_compressor(),
                overwrite=True,
            )
        self._create_quality(root, layout)
        step = overview_step(layout)
        root.create_array(
            "overview",
            shape=(3, -(-layout.height * SR_FACTOR // step), -(-layout.width * SR_FACTOR // step)),
            chunks=(3, layout.core * SR_FACTOR // step, layout.core * SR_FACTOR // step),
            dtype="float32",
            fill_value=np.nan,
            compressors=_compressor(),
            overwrite=True,
        )
        root.attrs["overview_step"] = step
        for stage in STAGES:
            root.create_array(
                f"done/{stage}",
                shape=(rows, cols),
                chunks=(1, 1),
                dtype="uint8",
                fill_value=0,
                overwrite=True,
            )
        root.attrs["fingerprint"] = fingerprint  # last: a half-created store has no fingerprint and is redone

    @staticmethod
    def _create_quality(root: zarr.Group, layout: TileLayout) -> None:
        root.create_array(
            "quality",
            shape=(layout.rows, layout.cols, len(QUALITY_COLUMNS)),
            chunks=(1, 1, len(QUALITY_COLUMNS)),
            dtype="float32",
            fill_value=np.nan,
            overwrite=True,
        )
        root.attrs["quality_columns"] = list(QUALITY_COLUMNS)

    def status(self, stage: str) -> np.ndarray:
        """(rows, cols) uint8 done markers of a stage (the whole AOI: for the driver's resume, once)."""
        return zarr.open_group(self.url, mode="r", zarr_format=3)[f"done/{stage}"][...]

    def status_window(self, stage: str, rows: slice, cols: slice) -> np.ndarray:
        """Done markers of a block of tiles (reads only those tiles' marker chunks)."""
        return self._array(f"done/{stage}", "r")[rows, cols]

    def free_inputs(self, key: TileKey) -> None:
        """Delete a tile's ingested chunks (after its prediction is written)."""
        for name in _GROUP_SHAPES:
            arr = self._array(f"tiles/{name}")
            arr[key.row, key.col] = np.full(arr.shape[2:], np.nan, np.float32)

    def free_prediction(self, key: TileKey) -> None:
        """Delete a tile's prediction chunk, and its spread's (after every core that blends it is written)."""
        for name in ("pred", "spread") if self.has_spread() else ("pred",):
            arr = self._array(name)
            arr[key.row, key.col] = np.full(arr.shape[2:], np.nan, np.float32)

    def has_spread(self) -> bool:
        """Whether the job has the `--uncertainty` spread array (looked up once per process)."""
        cache = self.__dict__.setdefault("_has_spread", [])
        if not cache:
            cache.append("spread" in self._open("r"))
        return cache[0]

    def write_overview(self, key: TileKey, layout: TileLayout, rgb_core: np.ndarray) -> None:
        """Store every `step`-th pixel of a core's (3, h, w) true colour in the overview."""
        step = int(self._open().attrs["overview_step"])
        y0, _, x0, _ = layout.core_bounds(key)
        oy, ox = y0 * SR_FACTOR // step, x0 * SR_FACTOR // step
        small = rgb_core[:, ::step, ::step]
        self._array("overview")[:, oy : oy + small.shape[1], ox : ox + small.shape[2]] = small

    def read_overview(self) -> np.ndarray:
        """(3, qh, qw) true-colour overview (B04, B03, B02 reflectance, NaN = nodata)."""
        return self._array("overview", "r")[...]

    def mark(self, stage: str, key: TileKey, value: int) -> None:
        self._array(f"done/{stage}")[key.row, key.col] = value

    def write_tile(self, key: TileKey, b10: np.ndarray, b20: np.ndarray, b60: np.ndarray) -> None:
        for name, arr in zip(_GROUP_SHAPES, (b10, b20, b60)):
            self._array(f"tiles/{name}")[key.row, key.col] = arr

    def read_tiles(self, keys: list[TileKey]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched (N, C, h, w) arrays of the three groups for `keys`."""
        return tuple(  # type: ignore[return-value]
            np.stack([self._array(f"tiles/{name}", "r")[k.row, k.col] for k in keys])
            for name in _GROUP_SHAPES
        )

    def write_prediction(self, key: TileKey, pred: np.ndarray) -> None:
        self._array("pred")[key.row, key.col] = pred

    def read_prediction(self, key: TileKey) -> np.ndarray:
        return self._array("pred", "r")[key.row, key.col]

    def write_spread(self, key: TileKey, spread: np.ndarray) -> None:
        self._array("spread")[key.row, key.col] = spread

    def read_spread(self, key: TileKey) -> np.ndarray:
        return self._array("spread", "r")[key.row, key.col]

    def write_quality(self, key: TileKey, figures: np.ndarray) -> None:
        """Store one tile's `QUALITY_COLUMNS` figures (written before the tile's infer marker)."""
        self._array("quality")[key.row, key.col] = figures

    def read_quality(self) -> np.ndarray:
        """(rows, cols, Q) figures of every tile (NaN: empty, or not computed); read once, at the export."""
        return zarr.open_group(self.url, mode="r", zarr_format=3)["quality"][...]
