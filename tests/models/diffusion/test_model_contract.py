"""Contract of every SR preset: shapes, seeded determinism, batch independence, save/load round trip,
bands = input channels, and teaching errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.bands import RGB_BANDS
from pipeline.errors import CheckpointError, ConfigError, DataError, DiffFuSRError
from pipeline.models.diffusion import (
    DEFAULT_WEIGHTS,
    PRESETS,
    SRDiffusion,
    get_preset,
    load_sr_model,
    save_sr_model,
)


@pytest.fixture(scope="module")
def small() -> SRDiffusion:
    torch.manual_seed(0)
    return SRDiffusion(get_preset("small")).eval()


def _rgb(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_small_output_shape_for_non_multiple_sizes_and_seeded_determinism(small):
    x = _rgb(1, 17, 22)
    a = small.super_resolve(x, steps=2, generator=torch.Generator().manual_seed(4))
    b = small.super_resolve(x, steps=2, generator=torch.Generator().manual_seed(4))
    assert a.shape == (1, 3, 68, 88) and a.dtype == torch.float32
    assert torch.equal(a, b)
    c = small.super_resolve(x, steps=2, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(a, c)


def test_batch_of_two_equals_two_single_calls_on_the_same_noise(small):
    x = _rgb(2, 16, 16)
    batch = small.super_resolve(
        x, steps=2, generator=torch.Generator().manual_seed(1), lowfreq_consistency=False
    )
    # x_T of the batch is one draw of shape (2, ...): reproduce it and feed each half alone.
    g = torch.Generator().manual_seed(1)
    noise = torch.randn((2, 3, 64, 64), generator=g)
    xn = small.normalize(x)
    from pipeline.models.diffusion import DDIMSampler

    for i in range(2):
        s = DDIMSampler(small.schedule)
        s.set_timesteps(2)
        v, ctx = small.E.embed(xn[i : i + 1]), small.encoder.encode(xn[i : i + 1])
        xt = noise[i : i + 1]
        with torch.no_grad():
            for k in range(len(s)):
                xt = s.step(small.model(xt, s.noise_level(k, 1), ctx, v), k, xt)
        assert torch.allclose(small.from_target(xt, xn[i : i + 1]), batch[i : i + 1], atol=1e-5)


def test_uncertainty_map_over_several_samples(small):
    mean, std = small.super_resolve_with_uncertainty(
        _rgb(1, 16, 16), steps=2, num_samples=2, generator=torch.Generator().manual_seed(0)
    )
    assert mean.shape == std.shape == (1, 3, 64, 64) and (std >= 0).all() and std.sum() > 0


def test_save_load_round_trip_and_bands_equal_input_channels(small, tmp_path):
    save_sr_model(small, tmp_path / "w")
    bands = json.loads((tmp_path / "w" / "bands.json").read_text())
    assert bands["inputs"] == list(RGB_BANDS) and len(bands["inputs"]) == small.config.in_channels
    loaded = load_sr_model(tmp_path / "w")
    x = _rgb(1, 16, 16)
    a = small.super_resolve(x, steps=2, generator=torch.Generator().manual_seed(0))
    b = loaded.super_resolve(x, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_shipped_weights_load_and_super_resolve():
    assert (DEFAULT_WEIGHTS / "model.safetensors").is_file()
    model = load_sr_model(None)
    assert model.config.preset == "small"
    out = model.super_resolve(_rgb(1, 16, 16), steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def test_bad_inputs_raise_teaching_errors(small, tmp_path):
    with pytest.raises(DataError, match="B04, B03, B02"):
        small.super_resolve(torch.rand(1, 4, 16, 16))
    with pytest.raises(ConfigError, match="1..1000"):
        small.super_resolve(_rgb(1, 16, 16), steps=1001)
    with pytest.raises(DataError, match="16x16"):
        small.super_resolve(_rgb(1, 8, 8))
    with pytest.raises(DataError, match="NaN"):
        small.super_resolve(torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_sr_model(tmp_path / "nope")
    with pytest.raises(ConfigError, match="unknown SR preset"):
        get_preset("huge")
    save_sr_model(small, tmp_path / "w")
    bj = tmp_path / "w" / "bands.json"
    bj.write_text(json.dumps({"inputs": ["B02", "B03", "B04", "B08"], "outputs": list(RGB_BANDS)}))
    with pytest.raises(CheckpointError, match="bands"):
        load_sr_model(tmp_path / "w")
    assert issubclass(CheckpointError, DiffFuSRError)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_shape_and_determinism(name):
    torch.manual_seed(0)
    m = SRDiffusion(PRESETS[name]).eval()
    x = _rgb(1, 16, 16)
    a = m.super_resolve(x, steps=1, generator=torch.Generator().manual_seed(0))
    b = m.super_resolve(x, steps=1, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1, 3, 64, 64) and torch.equal(a, b)
