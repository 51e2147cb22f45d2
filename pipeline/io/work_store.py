"""The job's working Zarr v3 store: ingested tiles, tile predictions and per-stage done markers.

Layout (one Zarr chunk per tile, so every write is a whole, disjoint chunk and tasks never race):
    tiles/b10  (rows, cols, 4, W, W)        float32 reflectance, NaN = nodata (W = window, 10 m px)
    tiles/b20  (rows, cols, 6, W/2, W/2)
    tiles/b60  (rows, cols, 2, W/6, W/6)
    pred       (rows, cols, 12, 4W, 4W)     float32 prediction of the whole window, S2 band order
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

from pipeline.errors import OutputError
from pipeline.tiling.grid import SR_FACTOR, TileKey, TileLayout

STAGES = ("ingest", "infer", "mosaic")
TODO, DONE, EMPTY = 0, 1, 2
_GROUP_SHAPES = {"b10": (4, 1), "b20": (6, 2), "b60": (2, 6)}
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

    def create(self, layout: TileLayout, fingerprint: str) -> None:
        """Create the arrays unless they exist for the same job; refuse a store of another job."""
        try:
            root = self._open("a")
        except Exception as exc:  # noqa: BLE001 -- any fsspec/zarr error means "cannot create"
            raise OutputError(
                f"cannot create the work store at {self.url!r}: {exc}; check --out is writable"
            ) from None
        old = root.attrs.get("fingerprint")
        if old == fingerprint:
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
        root.create_array(
            "pred",
            shape=(rows, cols, 12, f, f),
            chunks=(1, 1, 12, f, f),
            dtype="float32",
            fill_value=np.nan,
            compressors=_compressor(),
            overwrite=True,
        )
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
        """Delete a tile's prediction chunk (after every core that blends it is written)."""
        arr = self._array("pred")
        arr[key.row, key.col] = np.full(arr.shape[2:], np.nan, np.float32)

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
