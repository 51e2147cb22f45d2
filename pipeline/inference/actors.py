"""The inference worker: loads its model once, then super-resolves batches of tiles from the work store.

`run.py` wraps `TileWorker` in `ray.remote` (one actor per GPU, or per CPU worker); the class itself is plain
Python so that it can be tested and used without Ray.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pipeline.inference.methods import MethodOptions, get_method
from pipeline.inference.predict import predict_tiles_full
from pipeline.io.work_store import DONE, WorkStore
from pipeline.tiling.grid import TileKey, TileLayout, tile_seed


class TileWorker:
    """Holds one method instance; `run` processes a batch of tile keys end to end."""

    def __init__(
        self,
        method: str,
        options: MethodOptions,
        store: WorkStore,
        seed: int,
        threads: int | None = None,
        env: dict[str, str] | None = None,
        max_samples: int | None = None,
    ) -> None:
        """`max_samples`: the most samples (tiles x `--uncertainty` draws) per forward pass, the run's
        `--batch-tiles` (None: a whole call's). 4 tiles x 4 draws in one pass of the shipped fusion nets was
        killed by Ray's memory monitor on a 24 GiB machine; the samples are the same whatever the split."""
        import torch

        os.environ.update(env or {})  # the driver's storage credentials/endpoints (see run._call_with_env)
        if threads:
            torch.set_num_threads(threads)
        if options.device == "cuda" and not torch.cuda.is_available():
            # Ray may assign a logical GPU on a machine without CUDA; fall back rather than fail.
            options = MethodOptions(**{**options.__dict__, "device": "cpu"})
        self.method = get_method(method, options)
        self.draws = max(1, options.uncertainty)  # config refuses draws for the deterministic baselines
        self.store = store
        self.seed = seed
        self.max_samples = max_samples
        self.pid = os.getpid()

    def run(self, keys: list[TileKey], layout: TileLayout, store: WorkStore | None = None) -> dict[str, Any]:
        """Predict `keys` (all non-empty, ingested tiles) and write their predictions, then their markers.

        The whole batch goes through one forward pass of each network. Each tile is seeded by its position on
        the grid (`tile_seed`) and the networks are batch-invariant: its prediction does not depend on how
        tiles were batched or which worker ran it, so a rerun after a crash reproduces it exactly, and
        `difffusr superres` on the same grid gives the same pixels.

        With `--uncertainty K` each tile is drawn K times (the K x B samples go `max_samples` per forward
        pass), the product is their mean and their per-pixel spread is written beside it. The tile's quality
        figures (`inference.quality`) are computed here, while its inputs and prediction are in memory, and
        stored in the work store before the done marker.

        Returns:
            {"tiles", "pid", "model_s": seconds in `predict_tiles_full` (the forward passes, for the actor's
            busy fraction), "call_s" / "cpu_s": wall and CPU seconds of the whole call (reads and writes
            included: the stage's cost, free of the driver's delay in noticing the result), "steps",
            "precision", "self_ensemble" (what the learned method used; None for the baselines), "draws"}.
        """
        call_t0, cpu_t0 = time.perf_counter(), time.process_time()
        store = store or self.store  # a pool kept across the units of a plan gets each unit's store
        b10, b20, b60 = store.read_tiles(keys)
        seeds = [tile_seed(self.seed, k, layout) for k in keys]
        cores = [core_in_window(layout, k) for k in keys]
        t0 = time.perf_counter()
        preds = predict_tiles_full(
            self.method, b10, b20, b60, seeds=seeds, draws=self.draws, max_batch=self.max_samples, cores=cores
        )
        model_s = time.perf_counter() - t0
        for i, key in enumerate(keys):
            store.write_prediction(key, preds.product[i])
            if preds.spread is not None:
                store.write_spread(key, preds.spread[i])
            if preds.quality is not None:
                store.write_quality(key, preds.quality[i])
            store.mark("infer", key, DONE)
        return {
            "tiles": len(keys),
            "pid": self.pid,
            "model_s": model_s,
            "call_s": time.perf_counter() - call_t0,
            "cpu_s": time.process_time() - cpu_t0,
            "steps": getattr(self.method, "steps", None),
            "precision": getattr(self.method, "precision", None),
            "self_ensemble": getattr(self.method, "self_ensemble", None),
            "draws": self.draws,
        }


def core_in_window(layout: TileLayout, key: TileKey) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of `key`'s core inside its window, 10 m pixels (clipped at the AOI's edge)."""
    y0, y1, x0, x1 = layout.core_bounds(key)
    wy, wx = layout.window_origin(key)
    return y0 - wy, y1 - wy, x0 - wx, x1 - wx
