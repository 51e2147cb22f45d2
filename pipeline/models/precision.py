"""Compute precision of inference: autocast dtype of the network calls and the tensor memory format.

`autocast("cpu", "bf16")` runs convolutions and matrix products in bfloat16 (oneDNN's avx512_bf16 kernels on
CPUs that have them) and keeps reductions, normalisations and the samplers' updates in float32; "fp32" is
plain float32 (autocast disabled, whatever the caller set). Models are put in channels_last for bf16/fp16,
the layout oneDNN's and cuDNN's reduced-precision convolutions run fastest in.

"auto" (the default) is bf16 where the device runs it natively and fp32 elsewhere: on a CPU without
avx512_bf16/AMX oneDNN emulates bfloat16, and the shipped fusion nets then took 39.1 s for one demo
tile (120 px window) against 3.8 s in fp32 (a 2-core AVX2 EPYC, benchmarks/RESULTS.md "Precision"), and
the whole method 1.42x its fp32 time on an AVX-512 Xeon without avx512_bf16, where a CPU with avx512_bf16
runs bf16 at 2.2x fp32.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

#: Autocast dtype of each precision name (None: plain float32); the names are pipeline.config.PRECISIONS
#: (not imported: the models sit below the config's catalog imports; tests/models/test_precision.py).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: The precision chosen per device: bf16 where it is native, else fp32 (`resolve_precision`).
AUTO = "auto"


#: x86 instruction sets with bfloat16 arithmetic (`torch.cpu.get_capabilities()` keys).
X86_BF16_FEATURES: tuple[str, ...] = ("avx512_bf16", "amx_bf16")


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether `device_type` runs bfloat16 convolutions in hardware.

    CPU: oneDNN must support bf16 and, on x86, the CPU must have avx512_bf16 or AMX. oneDNN alone says yes on
    any AVX-512 CPU (it emulates bf16 with avx512bw), and there bf16 is slower than fp32: the learned method
    took 19.5 s per tile in bf16 against 13.7 s in fp32 on a 2-core AVX-512 Xeon without avx512_bf16
    (benchmarks/RESULTS.md "Default precision"). Other architectures: oneDNN's answer.
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu" or not _onednn_bf16():
        return False
    caps = _cpu_capabilities()
    if caps.get("architecture") in ("x86_64", "x86"):
        return any(caps.get(f, False) for f in X86_BF16_FEATURES)
    return True


def _onednn_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _cpu_capabilities() -> dict:
    return dict(torch.cpu.get_capabilities())


def _auto(device_type: str) -> str:
    """What "auto" is on `device_type`: bf16 where `native_bf16`, else fp32."""
    return "bf16" if native_bf16(device_type) else "fp32"


def resolve_precision(precision: str, device_type: str) -> str:
    """The concrete precision ("fp32" | "bf16" | "fp16") that `precision` means on `device_type`.

    "auto" is bf16 where `native_bf16`, else fp32. An explicit bf16 on a device without native bf16 is kept
    (the user asked for it) but logged: it is emulated and several times slower than fp32.
    """
    if precision == AUTO:
        return _auto(device_type)
    check_precision(precision, device_type)
    if precision == "bf16" and not native_bf16(device_type):
        log.warning(
            "--precision bf16 on a %s without native bfloat16 (no avx512_bf16/AMX): emulated, ~10x slower "
            "than fp32 here; --precision auto picks fp32 on this device",
            device_type,
        )
    return precision


def check_precision(precision: str, device_type: str) -> None:
    """ConfigError unless `precision` is one of PRECISIONS and runs on `device_type` (fp16: CUDA only)."""
    if precision != AUTO and precision not in AUTOCAST_DTYPES:
        raise ConfigError(f"--precision {precision!r} must be one of {AUTO}, {', '.join(AUTOCAST_DTYPES)}")
    if precision == "fp16" and device_type != "cuda":
        raise ConfigError(
            f"--precision fp16 needs a CUDA device (this runs on {device_type}, which has no fast fp16 "
            "convolutions); use bf16 or fp32"
        )


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context of `precision` (auto, fp32, bf16, fp16) on `device_type`; fp32 disables it."""
    check_precision(precision, device_type)
    if precision == AUTO:  # not `resolve_precision`: its warning would repeat on every network call
        precision = _auto(device_type)
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return torch.autocast(device_type, enabled=False)
    return torch.autocast(device_type, dtype=dtype)


def memory_format(precision: str) -> torch.memory_format:
    """channels_last for the reduced precisions, the default contiguous layout for fp32 (a resolved name)."""
    return torch.channels_last if precision in ("bf16", "fp16") else torch.contiguous_format
