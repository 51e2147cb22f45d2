"""Compute precision of inference: autocast dtype of the network calls and the tensor memory format.

`autocast("cpu", "bf16")` runs convolutions and matrix products in bfloat16 (oneDNN's avx512_bf16 kernels on
CPUs that have them) and keeps reductions, normalisations and the samplers' updates in float32; "fp32" is
plain float32 (autocast disabled, whatever the caller set). Models are put in channels_last for bf16/fp16,
the layout oneDNN's and cuDNN's reduced-precision convolutions run fastest in.
"""

from __future__ import annotations

import contextlib

import torch

from pipeline.errors import ConfigError

#: Autocast dtype of each precision name (None: plain float32); the names are pipeline.config.PRECISIONS
#: (not imported: the models sit below the config's catalog imports; tests/models/test_precision.py).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device_type: str) -> None:
    """ConfigError unless `precision` is one of PRECISIONS and runs on `device_type` (fp16: CUDA only)."""
    if precision not in AUTOCAST_DTYPES:
        raise ConfigError(f"--precision {precision!r} must be one of {', '.join(AUTOCAST_DTYPES)}")
    if precision == "fp16" and device_type != "cuda":
        raise ConfigError(
            f"--precision fp16 needs a CUDA device (this runs on {device_type}, which has no fast fp16 "
            "convolutions); use bf16 or fp32"
        )


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context of `precision` ("fp32" | "bf16" | "fp16") on `device_type`; fp32 disables it."""
    check_precision(precision, device_type)
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return torch.autocast(device_type, enabled=False)
    return torch.autocast(device_type, dtype=dtype)


def memory_format(precision: str) -> torch.memory_format:
    """channels_last for the reduced precisions, the default contiguous layout for fp32."""
    return torch.contiguous_format if precision == "fp32" else torch.channels_last
