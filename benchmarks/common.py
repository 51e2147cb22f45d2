"""Shared helpers of the benchmarks: timing, FLOP counting, the machine's matmul ceiling, machine facts."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def machine() -> dict[str, Any]:
    """Facts about the machine a number was measured on."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        info["loadavg_1m"] = os.getloadavg()[0]
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(
    fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, device: str | torch.device = "cpu"
) -> dict:
    """Median (and min) wall time of `fn()` in seconds over `repeats` calls after `warmup` calls."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn` (torch.utils.flop_counter: matmuls and convolutions, 2 per MAC)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_ceiling(
    dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5, device: str | torch.device = "cpu"
) -> float:
    """The machine's dense-compute ceiling: best GFLOP/s of square matmuls of side n/2, n and 2n.

    The best of several sizes and `repeats` runs each, so that a moment of contention on a shared machine
    or one unlucky size does not lower the ceiling.
    """
    g = torch.Generator().manual_seed(0)
    best = 0.0
    for side in (max(64, n // 2), n, 2 * n):
        a = torch.randn(side, side, generator=g).to(device=device, dtype=dtype)
        b = torch.randn(side, side, generator=g).to(device=device, dtype=dtype)
        t = median_time(lambda a=a, b=b: a @ b, repeats=repeats, warmup=1, device=device)
        best = max(best, 2 * side**3 / t["min_s"] / 1e9)
    return best


def write_json(path: str | Path | None, payload: dict) -> None:
    """Write `payload` as JSON (when a path is given) and print it."""
    text = json.dumps(payload, indent=1, default=str)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    print(text)
