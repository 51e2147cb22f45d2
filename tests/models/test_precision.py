"""The compute precisions: the config's names are the models' autocast dtypes; fp16 is refused off CUDA."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import PRECISIONS
from pipeline.errors import ConfigError
from pipeline.models import precision
from pipeline.models.precision import AUTO, AUTOCAST_DTYPES, autocast, native_bf16, resolve_precision


def test_the_config_and_the_models_name_the_same_precisions():
    assert (AUTO, *AUTOCAST_DTYPES) == PRECISIONS


def test_auto_is_bf16_only_where_the_cpu_runs_bfloat16_natively():
    # this CI's CPU may or may not have avx512_bf16: the rule is checked against torch's report of the CPU.
    # oneDNN's own "bf16 supported" is not enough: it says yes on any AVX-512 CPU, where bf16 is emulated
    caps = torch.cpu.get_capabilities()
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported() and (
        caps.get("avx512_bf16", False) or caps.get("amx_bf16", False) or caps.get("architecture") != "x86_64"
    )
    expected = "bf16" if native else "fp32"
    assert native_bf16("cpu") == (expected == "bf16")
    assert resolve_precision("auto", "cpu") == expected
    conv = torch.nn.Conv2d(3, 4, 3)
    with torch.no_grad(), autocast("cpu", "auto"):
        assert conv(torch.rand(1, 3, 8, 8)).dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)


@pytest.mark.parametrize(
    ("caps", "native"),
    [
        ({"architecture": "x86_64", "avx512_f": True, "avx512_bf16": False, "amx_bf16": False}, False),
        ({"architecture": "x86_64", "avx512_f": True, "avx512_bf16": True, "amx_bf16": False}, True),
        ({"architecture": "x86_64", "avx512_f": True, "avx512_bf16": False, "amx_bf16": True}, True),
    ],
)
def test_an_avx512_cpu_without_bf16_instructions_gets_fp32(monkeypatch, caps, native):
    # oneDNN reports bf16 support on every AVX-512 CPU; without avx512_bf16/AMX it is emulated and slower than
    # fp32 (19.5 vs 13.7 s per tile on such a Xeon), so "auto" must not pick it there
    monkeypatch.setattr(precision, "_onednn_bf16", lambda: True)
    monkeypatch.setattr(precision, "_cpu_capabilities", lambda: caps)
    precision.native_bf16.cache_clear()
    try:
        assert precision.native_bf16("cpu") is native
        assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    finally:
        precision.native_bf16.cache_clear()


def test_an_explicit_precision_is_kept_even_where_it_is_emulated():
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ConfigError, match="--precision fp16 needs a CUDA device"):
        resolve_precision("fp16", "cpu")


def test_bf16_autocast_runs_convolutions_in_bfloat16_and_fp32_disables_autocast():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad(), autocast("cpu", "bf16"):
        assert conv(x).dtype == torch.bfloat16
        with autocast("cpu", "fp32"):
            assert conv(x).dtype == torch.float32


def test_fp16_on_the_cpu_is_a_config_error():
    with pytest.raises(ConfigError, match="--precision fp16 needs a CUDA device"):
        autocast("cpu", "fp16")
