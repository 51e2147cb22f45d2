"""The job's working Zarr v3 store: ingested tiles, tile predictions and per-stage done markers.

Layout (one Zarr chunk per tile, so every write is a whole, disjoint chunk and tasks never race):
    tiles/b10  (rows, cols, 4, W, W)        float32 reflectance, NaN = nodata (W = window, 10 m px)
    tiles/b20  (rows, cols, 6, W/2, W/2)
    tiles/b60  (rows, cols, 2, W/6, W/6)
    pred       (rows, cols, 12, 4W, 4W)     float32 prediction of the whole window, S2 band order
    done/<stage> (rows, cols) uint8         0 = to do, 1 = done, 2 = done and empty (no valid pixel)
A done marker is written only after its data, so a crash leaves the tile "to do" and a rerun redoes it.
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


def _compressor() -> Any:
    return zarr.codecs.ZstdCodec(level=3)


class WorkStore:
    """Typed access to the working store of one job (picklable: holds only the URL)."""

    def __init__(self, url: str) -> None:
        self.url = url  # a path or an fsspec URL; remote credentials come from the environment

    def _open(self, mode: str = "r+") -> zarr.Group:
        return zarr.open_group(self.url, mode=mode, zarr_format=3)

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
        """(rows, cols) uint8 done markers of a stage."""
        return self._open("r")[f"done/{stage}"][...]

    def mark(self, stage: str, key: TileKey, value: int) -> None:
        self._open()[f"done/{stage}"][key.row, key.col] = value

    def write_tile(self, key: TileKey, b10: np.ndarray, b20: np.ndarray, b60: np.ndarray) -> None:
        root = self._open()
        for name, arr in zip(_GROUP_SHAPES, (b10, b20, b60)):
            root[f"tiles/{name}"][key.row, key.col] = arr

    def read_tiles(self, keys: list[TileKey]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched (N, C, h, w) arrays of the three groups for `keys`."""
        root = self._open("r")
        return tuple(  # type: ignore[return-value]
            np.stack([root[f"tiles/{name}"][k.row, k.col] for k in keys]) for name in _GROUP_SHAPES
        )

    def write_prediction(self, key: TileKey, pred: np.ndarray) -> None:
        self._open()["pred"][key.row, key.col] = pred

    def read_prediction(self, key: TileKey) -> np.ndarray:
        return self._open("r")["pred"][key.row, key.col]
