"""The reference forward semantics (golden_vectors.json, copied into tests/models/diffusion/data/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.diffusion import CosineSchedule, DDIMSampler, get_preset
from pipeline.models.diffusion.model import denoiser_from_config
from pipeline.models.diffusion.unet import (
    DABlock,
    Downsample,
    PositionalEncoding,
    ResnetBlocWithAttn,
    Upsample,
)

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_vectors.json").read_text())


def test_pixel_fold_is_pixel_unshuffle_with_the_reference_channel_order():
    g = GOLDEN["pixel_fold"]
    x = torch.tensor(g["input"])
    assert torch.equal(F.pixel_unshuffle(x, 2), torch.tensor(g["output"]))
    assert torch.equal(
        F.pixel_shuffle(torch.tensor(g["unfold_example_input"]), 2), torch.tensor(g["unfold_example_output"])
    )


def test_positional_encoding_of_the_noise_level():
    g = GOLDEN["positional_encoding"]
    assert torch.allclose(
        PositionalEncoding(8)(torch.tensor(g["dim8_levels"])), torch.tensor(g["dim8_output"]), atol=1e-6
    )
    assert torch.allclose(
        PositionalEncoding(64)(torch.tensor(g["dim64_levels"])), torch.tensor(g["dim64_output"]), atol=1e-6
    )


def test_context_resize_is_bilinear_without_align_corners():
    g = GOLDEN["ctx_resize"]
    out = F.interpolate(torch.tensor(g["input"]), size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(out, torch.tensor(g["output_4x4"]))


def test_ddim_schedule_levels_and_alpha_bars_match_bit_for_bit():
    g = GOLDEN["ddim_schedule"]
    s = CosineSchedule.cosine(1000)
    sampler = DDIMSampler(s)
    pairs = sampler.set_timesteps(20)
    assert pairs == [(r["t"], r["t_prev"]) for r in g["ddim_steps"]]
    levels = [float(sampler.noise_level(i, 1)) for i in range(20)]
    assert levels == g["unet_noise_levels_in_call_order"]
    assert s.betas[:5].tolist() == g["betas_first5"] and s.betas[-5:].tolist() == g["betas_last5"]
    assert s.alphas_cumprod[-5:].tolist() == g["alphas_cumprod_last5"]


def test_dablock_ignores_its_groupnorm_parameters():
    torch.manual_seed(0)
    blk = DABlock(16, 8, groups=4)
    x, kv = torch.randn(2, 16, 6, 6), torch.randn(2, 8)
    y1 = blk(x, kv)
    with torch.no_grad():
        blk.block[0].weight.mul_(3.0).add_(1.0)
        blk.block[0].bias.add_(2.0)
    assert torch.equal(y1, blk(x, kv))


def test_paper_unet_layer_table_matches_the_reference():
    c = get_preset("paper")
    with torch.device("meta"):
        net = denoiser_from_config(c)
    for key, typ, cin, cout, attn, res1x1 in GOLDEN["unet_layout"]["rows"]:
        group, idx = key.split(".")
        layer = getattr(net, group)[int(idx)]
        if typ == "ResnetBlocWithAttn":
            assert isinstance(layer, ResnetBlocWithAttn), key
            rb = layer.res_block
            assert (rb.block1.block[0].num_channels, rb.block1.block[3].out_channels) == (cin, cout), key
            assert layer.with_attn == attn and isinstance(rb.res_conv, torch.nn.Conv2d) == res1x1, key
        elif typ == "Downsample":
            assert isinstance(layer, Downsample) and layer.conv.in_channels == cin, key
        elif typ == "Upsample":
            assert isinstance(layer, Upsample) and layer.conv.in_channels == cin, key
        else:
            assert (layer.in_channels, layer.out_channels) == (cin, cout), key


@pytest.mark.slow
def test_paper_unet_shape_check():
    sc = GOLDEN["unet_layout"]["shape_check"]
    c = get_preset("paper")
    net = denoiser_from_config(c)
    with torch.no_grad():
        out = net(torch.randn(sc["x"]), torch.rand(1), torch.randn(sc["ctx"]), torch.randn(sc["k_v"]))
    assert list(out.shape) == sc["out"]
