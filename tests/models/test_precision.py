"""The compute precisions: the config's names are the models' autocast dtypes; fp16 is refused off CUDA."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import PRECISIONS
from pipeline.errors import ConfigError
from pipeline.models.precision import AUTOCAST_DTYPES, autocast


def test_the_config_and_the_models_name_the_same_precisions():
    assert tuple(AUTOCAST_DTYPES) == PRECISIONS


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
